/* One-shot completion: the prompt (argv[2] or stdin) in, the generated text out. */
#include "wasi_nn.h"

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 2, "complete MODEL [PROMPT]");
    size_t prompt_len;
    char *prompt = nn_prompt_arg(argc, argv, &prompt_len);
    graph g;
    graph_execution_context ctx;

    nn_load(model, &g);
    nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
    nn_set_prompt(ctx, prompt, prompt_len);
    nn_complete(ctx);
    nn_print_usage(ctx);

    nn_check(wasi_nn_finalize_execution_context(ctx), "finalize_execution_context");
    free(prompt);
    return 0;
}
