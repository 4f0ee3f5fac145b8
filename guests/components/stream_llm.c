// world: llm-imports
/* Streaming completion on the wasinn:llm text interface: the `stream` guest as a
 * component. No tensors: the prompt goes in as a string and the answer is pulled chunk
 * by chunk (generation.next-chunk), each printed as soon as it comes.
 *
 * Built by guests.py: zig makes a preview1 core module, `wasm-tools component embed`
 * attaches the world named on the first line, and `wasm-tools component new` with the
 * wasi_snapshot_preview1 command adapter makes the component (exporting wasi:cli/run).
 * The imports' glue is wasinn_llm.h. */
#include "wasinn_llm.h"

/* All of stdin, NUL-terminated; exits 1 when it cannot be read or held. */
static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n;
    char *text = malloc(cap);
    *len = 0;
    while (text && (n = fread(text + *len, 1, cap - *len - 1, stdin)) > 0) {
        *len += n;
        if (cap - *len - 1 == 0)
            text = realloc(text, cap *= 2);
    }
    if (!text || ferror(stdin)) {
        fputs("error: reading input failed\n", stderr);
        exit(1);
    }
    text[*len] = '\0';
    return text;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fputs("usage: stream_llm MODEL [PROMPT]\n", stderr);
        return 1;
    }
    size_t prompt_len;
    char *prompt = argc == 3 ? strdup(argv[2]) : read_stdin(&prompt_len);
    if (argc == 3)
        prompt_len = strlen(prompt);

    llm_handle graph = llm_load_by_name(argv[1]);
    llm_handle context = llm_graph_init_context(graph);
    llm_set_parameters_from_env(context); /* n_predict, temp, seed ... as the C guests read them */

    llm_generation_print(llm_context_generate(context, prompt, prompt_len));
    llm_context_drop(context);
    llm_graph_drop(graph);
    free(prompt);
    return 0;
}
