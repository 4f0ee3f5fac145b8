// world: llm-imports
/* Two continuations of one prompt on the wasinn:llm text interface (0.1.1's
 * context.fork): the prompt is evaluated once, with n-predict 0, in a context that is then
 * forked twice; each fork gets its own seed and generates on the same prompt (the host
 * reuses the state the fork copied: only the prompt's last token is evaluated again).
 *
 *     fork_llm MODEL PROMPT [SEED]     prints "[seed S] TEXT" for S = SEED and SEED + 1
 *
 * Parameters come from the environment as for stream_llm (n_predict, temp ...); SEED
 * defaults to 1. Built by guests.py as the other C components are. */
#include "wasinn_llm.h"

static void generate(llm_handle context, const char *prompt, int64_t seed, int64_t n_predict)
{
    llm_context_set_parameter(context, "seed", (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = seed});
    llm_context_set_parameter(context, "n-predict", (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = n_predict});
    printf("[seed %lld] ", (long long)seed);
    llm_generation_print(llm_context_generate(context, prompt, strlen(prompt)));
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fputs("usage: fork_llm MODEL PROMPT [SEED]\n", stderr);
        return 1;
    }
    const char *prompt = argv[2];
    int64_t seed = argc == 4 ? strtoll(argv[3], NULL, 10) : 1;
    llm_handle graph = llm_load_by_name(argv[1]);
    llm_handle parent = llm_graph_init_context(graph);
    llm_set_parameters_from_env(parent);
    const char *env_n_predict = getenv("n_predict");
    int64_t n_predict = env_n_predict && *env_n_predict ? strtoll(env_n_predict, NULL, 10) : 32;

    /* The shared prompt, evaluated once: nothing generated. */
    llm_context_set_parameter(parent, "n-predict", (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = 0});
    llm_handle none = llm_context_generate(parent, prompt, strlen(prompt));
    size_t len;
    if (llm_generation_next_chunk(none, &len)) {
        fputs("error: the prompt's evaluation generated text\n", stderr);
        return 2;
    }
    llm_generation_drop(none);

    llm_handle first = llm_context_fork(parent), second = llm_context_fork(parent);
    generate(first, prompt, seed, n_predict);
    generate(second, prompt, seed + 1, n_predict);

    llm_context_drop(second);
    llm_context_drop(first);
    llm_context_drop(parent);
    llm_graph_drop(graph);
    return 0;
}
