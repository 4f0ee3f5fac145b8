// world: llm-imports
/* ask: a guest to compose the providers with (it is not one). `ask MODEL [QUESTION]`:
 * each question (the argument, else each line of stdin) is one `generate` on one context,
 * the answer streamed chunk by chunk, then `usage: {...}` on stderr, as the other guests
 * print it. The option variables are set-parameter calls (wasinn_llm.h).
 *
 * On its own, a base model continues each question as raw text. Composed with
 * chat_template, every question is a turn of one conversation and every answer stops at
 * the turn marker; composed with model, the model and its defaults are the provider's.
 */
#include "components/wasinn_llm.h"

static void ask(llm_handle context, const char *question, size_t len)
{
    llm_generation_print(llm_context_generate(context, question, len));
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fputs("usage: ask MODEL [QUESTION]\n", stderr);
        return 1;
    }
    llm_handle graph = llm_load_by_name(argv[1]);
    llm_handle context = llm_graph_init_context(graph);
    llm_set_parameters_from_env(context);
    if (argc == 3) {
        ask(context, argv[2], strlen(argv[2]));
    } else {
        char line[4096];
        while (fgets(line, sizeof line, stdin)) {
            size_t len = strcspn(line, "\r\n");
            if (len)
                ask(context, line, len);
        }
    }
    llm_context_drop(context);
    llm_graph_drop(graph);
    return 0;
}
