// world: llm-provider
/* chat_template: the text interface on top of the host's, with a chat template and stop
 * strings. Composed with a guest (`wasinn-lab compose GUEST.wasm --with chat_template`), it
 * turns each prompt the guest sends into a turn of a conversation that its context keeps:
 *
 *     User: PROMPT\nAssistant:
 *
 * appended to the turns before it, the whole sent as the host's prompt (the host reuses
 * the common prefix, so a turn costs its own tokens); and it cuts the answer where the
 * model starts another turn (STOPS): a base model, which rarely ends by itself, then
 * answers one turn and stops. Text that could still become a stop string is held back
 * until the next chunk decides. The answer is appended to the conversation when it ends.
 * Everything else (parameters, properties, usage) is the host's, passed through; the
 * usage's finish is `stop` where a stop string ended the answer.
 *
 * It both imports and exports `graphs` and `prompt`: wasinn_lab.compose links the guest's
 * imports to its exports and its imports to the host (see compose.py for how).
 */
#define LLM_PROVIDES_PROMPT
#include "llm_provider.h"

#define TURN_BEFORE "User: "
#define TURN_AFTER "\nAssistant:"
static const char *const STOPS[] = {"\nUser:", "\nAssistant:"};
#define N_STOPS (sizeof STOPS / sizeof STOPS[0])

typedef struct {
    char *ptr;
    size_t len, cap;
} buffer;

static void buffer_add(buffer *b, const char *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = 2 * (b->len + n) + 64;
        char *p = realloc(b->ptr, cap);
        if (!p)
            abort();
        b->ptr = p;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void buffer_add_str(buffer *b, const char *s) { buffer_add(b, s, strlen(s)); }

/* Our resources: the host's, and what the template needs. */
typedef llm_provider_graph graph;

typedef struct generation generation;

typedef struct {
    llm_handle host;
    buffer conversation; /* every turn so far, as the host has seen it */
    generation *current; /* the answer under way, if any */
} context;

struct generation {
    llm_handle host;
    context *ctx;       /* NULL once the context is gone */
    buffer pending;     /* text pulled from the host, not given on yet */
    buffer answer;      /* what was given on: appended to the conversation at the end */
    bool over;          /* the host has no more, or a stop string ended it */
    bool stopped;       /* a stop string ended it: finish is `stop` */
    bool recorded;      /* its answer is in the conversation */
};

/* One return area per export. */
static llm_result_handle handle_area;
static llm_result_unit unit_area;
static llm_result_string string_area;
static llm_result_chunk chunk_area;
static llm_parameters parameters_area;
static llm_option_value option_value_area;
static llm_usage usage_area;

static void *checked(void *p)
{
    if (!p)
        abort();
    return p;
}

/* ---- graphs -------------------------------------------------------------------------------- */

LLM_EXPORT("graphs", "load-by-name") llm_result_handle *chat_load_by_name(char *name, size_t name_len)
{
    llm_import_load_by_name(name, name_len, &handle_area);
    free(name);
    if (!handle_area.is_err) {
        graph *g = checked(malloc(sizeof *g));
        g->host = handle_area.of.ok;
        handle_area.of.ok = llm_export_graph_new(g);
    }
    return &handle_area;
}

LLM_POST("graphs", "load-by-name") void chat_handle_post(llm_result_handle *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
}

LLM_EXPORT("graphs", "[method]graph.init-context") llm_result_handle *chat_init_context(graph *g)
{
    llm_import_graph_init_context(g->host, &handle_area);
    if (!handle_area.is_err) {
        context *c = checked(calloc(1, sizeof *c));
        c->host = handle_area.of.ok;
        handle_area.of.ok = llm_export_context_new(c);
    }
    return &handle_area;
}

LLM_POST("graphs", "[method]graph.init-context") void chat_init_context_post(llm_result_handle *area)
{
    chat_handle_post(area);
}

/* ---- contexts: parameters pass through ------------------------------------------------------ */

LLM_EXPORT("prompt", "[method]context.list-parameters") llm_parameters *chat_list_parameters(context *c)
{
    llm_import_context_list_parameters(c->host, &parameters_area);
    return &parameters_area;
}

LLM_POST("prompt", "[method]context.list-parameters") void chat_list_parameters_post(llm_parameters *area)
{
    llm_parameters_free(area);
}

LLM_EXPORT("prompt", "[method]context.get-parameter") llm_option_value *chat_get_parameter(context *c, char *name,
                                                                                         size_t name_len)
{
    llm_import_context_get_parameter(c->host, name, name_len, &option_value_area);
    free(name);
    return &option_value_area;
}

LLM_POST("prompt", "[method]context.get-parameter") void chat_get_parameter_post(llm_option_value *area)
{
    if (area->is_some)
        llm_value_free(&area->value);
}

LLM_EXPORT("prompt", "[method]context.set-parameter")
llm_result_unit *chat_set_parameter(context *c, char *name, size_t name_len, int32_t kind, int64_t payload,
                                    int32_t payload_len)
{
    llm_value value = llm_value_unflat(kind, payload, payload_len);
    llm_import_context_set_parameter(c->host, name, name_len, kind, payload, payload_len, &unit_area);
    free(name);
    llm_value_free(&value);
    return &unit_area;
}

LLM_POST("prompt", "[method]context.set-parameter") void chat_set_parameter_post(llm_result_unit *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
}

/* ---- generations: the template in, the stop strings out ------------------------------------ */

/* The answer, once over, goes into the conversation (the host has seen its text: the next
 * turn's prompt then extends what is in the KV cache). */
static void record_answer(generation *gen)
{
    if (gen->recorded || !gen->ctx)
        return;
    gen->recorded = true;
    buffer_add(&gen->ctx->conversation, gen->answer.ptr, gen->answer.len);
    buffer_add_str(&gen->ctx->conversation, "\n");
    if (gen->ctx->current == gen)
        gen->ctx->current = NULL;
}

static void cancel_host(generation *gen)
{
    if (!gen->over)
        llm_generation_cancel(gen->host);
    gen->over = true;
}

/* Cancelled, or replaced by the next turn: what was given on is the answer. */
static void end_generation(generation *gen)
{
    cancel_host(gen);
    record_answer(gen);
}

/* Where the earliest stop string starts in `text`, or `len` if none does. */
static size_t find_stop(const char *text, size_t len)
{
    size_t best = len;
    for (size_t s = 0; s < N_STOPS; s++) {
        size_t n = strlen(STOPS[s]);
        for (size_t i = 0; i + n <= len && i < best; i++)
            if (!memcmp(text + i, STOPS[s], n)) {
                best = i;
                break;
            }
    }
    return best;
}

/* How many bytes at the end of `text` could still be the start of a stop string. */
static size_t held_back(const char *text, size_t len)
{
    size_t keep = 0;
    for (size_t s = 0; s < N_STOPS; s++) {
        size_t n = strlen(STOPS[s]);
        for (size_t k = n - 1; k > keep; k--)
            if (k <= len && !memcmp(text + len - k, STOPS[s], k)) {
                keep = k;
                break;
            }
    }
    return keep;
}

static generation *start(context *c, const char *prompt, size_t prompt_len, llm_error *err)
{
    if (c->current)
        end_generation(c->current);
    size_t before = c->conversation.len;
    buffer_add_str(&c->conversation, TURN_BEFORE);
    buffer_add(&c->conversation, prompt, prompt_len);
    buffer_add_str(&c->conversation, TURN_AFTER);
    llm_result_handle r;
    llm_import_context_generate(c->host, c->conversation.ptr, c->conversation.len, &r);
    if (r.is_err) {
        c->conversation.len = before; /* this turn never happened */
        *err = r.of.err;
        return NULL;
    }
    generation *gen = checked(calloc(1, sizeof *gen));
    gen->host = r.of.ok;
    gen->ctx = c;
    c->current = gen;
    return gen;
}

/* The next piece of the answer: 1 with `out` set (malloc'd), 0 once it is over, -1 with
 * `err` set on the host's error. */
static int next_piece(generation *gen, llm_string *out, llm_error *err)
{
    for (;;) {
        size_t give;
        if (gen->over) {
            give = gen->pending.len; /* held back, and it never became a stop string */
            if (!give) {
                record_answer(gen);
                return 0;
            }
        } else {
            llm_result_chunk r;
            llm_import_generation_next_chunk(gen->host, &r);
            if (r.is_err) {
                gen->over = true;
                record_answer(gen);
                *err = r.of.err;
                return -1;
            }
            if (!r.of.ok.is_some) {
                gen->over = true;
                continue;
            }
            buffer_add(&gen->pending, r.of.ok.value.ptr, r.of.ok.value.len);
            free(r.of.ok.value.ptr);
            size_t stop = find_stop(gen->pending.ptr, gen->pending.len);
            if (stop < gen->pending.len) { /* the model starts another turn: the answer ends here */
                gen->stopped = true;
                cancel_host(gen);
                gen->pending.len = stop;
                give = stop;
            } else {
                give = gen->pending.len - held_back(gen->pending.ptr, gen->pending.len);
            }
            if (!give)
                continue;
        }
        out->len = give;
        out->ptr = checked(malloc(give));
        memcpy(out->ptr, gen->pending.ptr, give);
        buffer_add(&gen->answer, out->ptr, give);
        memmove(gen->pending.ptr, gen->pending.ptr + give, gen->pending.len - give);
        gen->pending.len -= give;
        return 1;
    }
}

LLM_EXPORT("prompt", "[method]context.generate") llm_result_handle *chat_generate(context *c, char *prompt,
                                                                                 size_t prompt_len)
{
    llm_error err;
    generation *gen = start(c, prompt, prompt_len, &err);
    free(prompt);
    if (!gen) {
        handle_area.is_err = 1;
        handle_area.of.err = err;
    } else {
        handle_area.is_err = 0;
        handle_area.of.ok = llm_export_generation_new(gen);
    }
    return &handle_area;
}

LLM_POST("prompt", "[method]context.generate") void chat_generate_post(llm_result_handle *area)
{
    chat_handle_post(area);
}

/* A fork of the host's context, with the conversation so far (the answer that has ended,
 * not yet recorded, too): both go on from the same turn. The host refuses while an answer
 * is under way (busy). */
LLM_EXPORT("prompt", "[method]context.fork") llm_result_handle *chat_fork(context *c)
{
    llm_import_context_fork(c->host, &handle_area);
    if (!handle_area.is_err) {
        context *twin = checked(calloc(1, sizeof *twin));
        twin->host = handle_area.of.ok;
        buffer_add(&twin->conversation, c->conversation.ptr, c->conversation.len);
        if (c->current && !c->current->recorded) {
            buffer_add(&twin->conversation, c->current->answer.ptr, c->current->answer.len);
            buffer_add_str(&twin->conversation, "\n");
        }
        handle_area.of.ok = llm_export_context_new(twin);
    }
    return &handle_area;
}

LLM_POST("prompt", "[method]context.fork") void chat_fork_post(llm_result_handle *area)
{
    chat_handle_post(area);
}

LLM_EXPORT("prompt", "[method]context.compute") llm_result_string *chat_compute(context *c, char *prompt,
                                                                              size_t prompt_len)
{
    llm_error err;
    generation *gen = start(c, prompt, prompt_len, &err);
    free(prompt);
    if (!gen) {
        string_area.is_err = 1;
        string_area.of.err = err;
        return &string_area;
    }
    buffer text = {0};
    llm_string piece;
    int got;
    while ((got = next_piece(gen, &piece, &err)) == 1) {
        buffer_add(&text, piece.ptr, piece.len);
        free(piece.ptr);
    }
    if (got < 0) {
        free(text.ptr);
        string_area.is_err = 1;
        string_area.of.err = err;
    } else {
        string_area.is_err = 0;
        string_area.of.ok.ptr = text.ptr ? text.ptr : checked(malloc(1));
        string_area.of.ok.len = text.len;
    }
    gen->ctx = NULL;
    llm_generation_drop(gen->host);
    free(gen->pending.ptr);
    free(gen->answer.ptr);
    free(gen);
    return &string_area;
}

LLM_POST("prompt", "[method]context.compute") void chat_compute_post(llm_result_string *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
    else
        free(area->of.ok.ptr);
}

LLM_EXPORT("prompt", "[method]generation.next-chunk") llm_result_chunk *chat_next_chunk(generation *gen)
{
    llm_string piece;
    llm_error err;
    int got = next_piece(gen, &piece, &err);
    if (got < 0) {
        chunk_area.is_err = 1;
        chunk_area.of.err = err;
    } else {
        chunk_area.is_err = 0;
        chunk_area.of.ok.is_some = got == 1;
        if (got == 1)
            chunk_area.of.ok.value = piece;
    }
    return &chunk_area;
}

LLM_POST("prompt", "[method]generation.next-chunk") void chat_next_chunk_post(llm_result_chunk *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
    else if (area->of.ok.is_some)
        free(area->of.ok.value.ptr);
}

LLM_EXPORT("prompt", "[method]generation.cancel") void chat_cancel(generation *gen)
{
    end_generation(gen);
}

LLM_EXPORT("prompt", "[method]generation.usage") llm_usage *chat_usage(generation *gen)
{
    llm_import_generation_usage(gen->host, &usage_area);
    if (gen->stopped) { /* the host saw a cancel: the answer itself stopped */
        usage_area.has_finish = 1;
        usage_area.finish = LLM_FINISH_STOP;
    }
    return &usage_area;
}

LLM_EXPORT("prompt", "[dtor]generation") void chat_generation_dtor(generation *gen)
{
    if (gen->ctx)
        end_generation(gen);
    llm_generation_drop(gen->host);
    free(gen->pending.ptr);
    free(gen->answer.ptr);
    free(gen);
}

LLM_EXPORT("prompt", "[dtor]context") void chat_context_dtor(context *c)
{
    if (c->current)
        c->current->ctx = NULL; /* a generation may outlive its context's handle */
    llm_context_drop(c->host);
    free(c->conversation.ptr);
    free(c);
}
