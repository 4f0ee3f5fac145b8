/* Streaming completion: prints each token as soon as the host samples it. */
#include "wasi_nn.h"

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 2, "stream MODEL [PROMPT]");
    size_t prompt_len, token_len;
    char *prompt = nn_prompt_arg(argc, argv, &prompt_len);
    char *token;
    graph g;
    graph_execution_context ctx;

    nn_load(model, &g);
    nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
    nn_set_prompt(ctx, prompt, prompt_len);

    while ((token = nn_next_token(ctx, &token_len))) {
        fwrite(token, 1, token_len, stdout);
        fflush(stdout);
        free(token);
    }
    nn_check(wasi_nn_fini_single(ctx), "fini_single");
    fputs("\n", stdout);
    fflush(stdout);
    nn_print_usage(ctx);

    nn_check(wasi_nn_finalize_execution_context(ctx), "finalize_execution_context");
    free(prompt);
    return 0;
}
