// world: llm-token-imports
/* What the model thought of each token, on the wasinn:llm text interface (0.1.1): the
 * answer is pulled token by token with tokens.next-token, and each token is printed on its
 * own line with its log-probability, its probability after the sampler chain, its rank,
 * the entropy of the model's distribution there and its likeliest alternatives:
 *
 *   " Paris"  logprob -0.412  p 1.000  rank 1  entropy 2.31 nats  |  " Paris" -0.412  " the" -1.87 ...
 *
 * The parameter logprobs (how many alternatives) comes from the variable `logprobs`, 3
 * if unset; the other option variables as stream_llm reads them. Built as stream_llm is
 * (guests.py); the imports' glue is wasinn_llm.h. */
#include "wasinn_llm.h"

/* A token's text, quoted, with newlines, tabs, quotes and backslashes escaped. */
static void print_quoted(const char *text, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '"' || c == '\\')
            printf("\\%c", c);
        else
            putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fputs("usage: tokens_llm MODEL PROMPT\n", stderr);
        return 1;
    }
    const char *alternatives = getenv("logprobs");
    llm_value logprobs = {.kind = LLM_VALUE_INTEGER, .of.integer = alternatives ? atoll(alternatives) : 3};

    llm_handle graph = llm_load_by_name(argv[1]);
    llm_handle context = llm_graph_init_context(graph);
    llm_set_parameters_from_env(context);
    llm_context_set_parameter(context, "logprobs", logprobs);

    llm_handle generation = llm_context_generate(context, argv[2], strlen(argv[2]));
    llm_token_info token;
    while (llm_generation_next_token(generation, &token)) {
        print_quoted(token.text.ptr, token.text.len);
        printf("  logprob %.3f  p %.3f  rank %u  entropy %.2f nats  |", token.logprob, token.probability,
               (unsigned)token.rank, token.entropy);
        for (size_t i = 0; i < token.top_len; i++) {
            putchar(' ');
            print_quoted(token.top[i].text.ptr, token.top[i].text.len);
            printf(" %.3f", token.top[i].logprob);
        }
        putchar('\n');
        fflush(stdout); /* each token reaches the host now, not at exit */
        llm_token_info_free(&token);
    }
    llm_usage usage = llm_generation_usage(generation);
    llm_print_usage(&usage);

    llm_generation_drop(generation);
    llm_context_drop(context);
    llm_graph_drop(graph);
    return 0;
}
