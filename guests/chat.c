/* Multi-turn chat: one turn per stdin line, streamed replies, one context throughout. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <sys/types.h>

#include "wasi_nn.h"

WASINN_LAB_STDIN_TURNS

/* WasmEdge ignores reverse-prompt in single mode, so the guest stops the reply
 * itself where the model starts writing the user's next turn. */
static const char MARKER[] = "\nUser:";

/* Length of the longest tail of s[0..n) that could still grow into MARKER: that
 * much of the reply must be held back until the next token decides. */
static size_t marker_tail(const char *s, size_t n)
{
    for (size_t k = sizeof MARKER - 2; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, MARKER, k))
            return k;
    return 0;
}

static void show(const char *s, size_t n)
{
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 1, "chat MODEL  (turns on stdin, one per line)");
    nn_buf conversation = {0}, reply = {0};
    char *line = NULL, *token;
    size_t line_cap = 0, token_len;
    ssize_t line_len;
    graph g;
    graph_execution_context ctx;

    nn_load(model, &g);
    nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
    nn_buf_add(&conversation, "", 0);

    while ((line_len = getline(&line, &line_cap, stdin)) != -1) {
        while (line_len > 0 && (line[line_len - 1] == '\n' || line[line_len - 1] == '\r'))
            line_len--;
        if (line_len == 0)
            continue;
        nn_buf_str(&conversation, "User: ");
        nn_buf_add(&conversation, line, (size_t)line_len);
        nn_buf_str(&conversation, "\nAssistant:");

        /* The whole conversation every turn: the host reuses the common prefix. */
        nn_set_prompt(ctx, conversation.p, conversation.len);
        reply.len = 0;
        nn_buf_add(&reply, "", 0);
        size_t shown = 0;
        int cut_at_marker = 0;
        while ((token = nn_next_token(ctx, &token_len))) {
            nn_buf_add(&reply, token, token_len);
            free(token);
            char *cut = strstr(reply.p, MARKER);
            if (cut) {
                reply.len = (size_t)(cut - reply.p);
                reply.p[reply.len] = '\0';
                cut_at_marker = 1;
                break;
            }
            size_t safe = reply.len - marker_tail(reply.p, reply.len);
            show(reply.p + shown, safe - shown);
            shown = safe;
        }
        /* The reply ended (end of generation, n-predict) on what may be the start of the
         * marker: the model was beginning the user's turn, so that is not the reply. */
        if (!cut_at_marker)
            reply.len -= marker_tail(reply.p, reply.len);
        reply.p[reply.len] = '\0';
        show(reply.p + shown, reply.len - shown);
        nn_check(wasi_nn_fini_single(ctx), "fini_single");

        nn_buf_add(&conversation, reply.p, reply.len);
        nn_buf_str(&conversation, "\n");
        show("\n", 1);
        nn_print_usage(ctx);
    }
    if (ferror(stdin))
        nn_fail("error: reading input failed");

    nn_check(wasi_nn_finalize_execution_context(ctx), "finalize_execution_context");
    free(line);
    free(reply.p);
    free(conversation.p);
    return 0;
}
