/* Five rounds of load, compute, unload, as WasmEdge's own `unload` test guest does:
 * each round loads the model by name, computes on a fresh context and unloads the graph,
 * leaving its context unfinalized. The host must not hold five copies of anything. */
#include "wasi_nn.h"

#define ROUNDS 5

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 2, "unload MODEL [PROMPT]");
    size_t prompt_len;
    char *prompt = nn_prompt_arg(argc, argv, &prompt_len);

    for (int round = 0; round < ROUNDS; round++) {
        graph g;
        graph_execution_context ctx;

        printf("----- round %d -----\n", round);
        nn_load(model, &g);
        nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
        nn_set_prompt(ctx, prompt, prompt_len);
        nn_complete(ctx);
        nn_check(wasi_nn_unload(g), "unload");
    }
    free(prompt);
    return 0;
}
