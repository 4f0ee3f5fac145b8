/* Embedding of the prompt (argv[2] or stdin), printed as the host's JSON. */
#include "wasi_nn.h"

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 2, "embed MODEL [PROMPT]");
    size_t prompt_len, out_len;
    char *prompt = nn_prompt_arg(argc, argv, &prompt_len);
    graph g;
    graph_execution_context ctx;

    nn_load_with(model, "\"embedding\":true", &g);
    nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
    nn_set_prompt(ctx, prompt, prompt_len);
    nn_check(wasi_nn_compute(ctx), "compute");

    char *out = nn_read_output(ctx, 0, 0, &out_len);
    fwrite(out, 1, out_len, stdout);
    fputs("\n", stdout);

    nn_check(wasi_nn_finalize_execution_context(ctx), "finalize_execution_context");
    free(out);
    free(prompt);
    return 0;
}
