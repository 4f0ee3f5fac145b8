/* Hand-written canonical-ABI glue for the wasinn:llm@0.1.1 imports a C guest uses (no
 * wit-bindgen here: it needs Rust). Header-only, as wasi_nn.h: include it in one .c file.
 *
 * The guest is a wasm32-wasi (preview1) core module; guests.py gives it the world
 * `llm-imports` (wasm-tools component embed) and makes it a component with the
 * wasi_snapshot_preview1 command adapter (wasm-tools component new --adapt), which
 * provides the wasi:cli/run export. Every import name and core signature here is the one
 *
 *     wasm-tools component embed --dummy-names legacy --world llm-imports WIT -t
 *
 * prints (WIT: guests/wit plus the WASI WIT, as guests.wit_dir() assembles it).
 *
 * Canonical ABI on wasm32, what this file relies on:
 * - Handles (own<T>, borrow<T>) are i32 indices into the guest's handle table. A method's
 *   `self` is a borrow: the first parameter. Owned handles are dropped with the import
 *   `[resource-drop]T`.
 * - Parameters are flattened to at most 16 core values: a string is (ptr, len) in guest
 *   memory that the host only reads during the call.
 * - A result that flattens to more than one value is written by the host to a "return
 *   area" whose address the guest passes as the last parameter. Strings and lists in it
 *   were allocated by the host through the guest's exported `cabi_realloc`: the guest owns
 *   and frees them.
 * - Layouts: a string is {u32 ptr; u32 len} (8 bytes, align 4); an enum of < 256 cases a
 *   u8; option<T> and result<T, E> are a u8 tag (0: none/ok, 1: some/err) followed by the
 *   payload at the payload's alignment; a record's fields in order, each at its alignment.
 */
#ifndef WASINN_LLM_H
#define WASINN_LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t llm_handle;

/* ---- wasinn:llm/types ----------------------------------------------------------------- */

/* enum error-code (u8) */
enum llm_error_code {
    LLM_INVALID_ARGUMENT = 0,
    LLM_INVALID_PARAMETER = 1,
    LLM_NOT_FOUND = 2,
    LLM_UNSUPPORTED_OPERATION = 3,
    LLM_BUSY = 4,
    LLM_TOO_LARGE = 5,
    LLM_RUNTIME_ERROR = 6,
};

/* string: 8 bytes, align 4. From the host: malloc'd through cabi_realloc, not NUL-terminated. */
typedef struct {
    char *ptr;
    size_t len;
} llm_string;

/* option<string>: tag at 0, string at 4; 12 bytes. */
typedef struct {
    uint8_t is_some;
    llm_string value;
} llm_option_string;

/* record error { code: error-code, message: string, name: option<string> }: 24 bytes, align 4. */
typedef struct {
    uint8_t code;              /* offset 0 */
    llm_string message;        /* offset 4 */
    llm_option_string name;    /* offset 12 */
} llm_error;

/* variant value { boolean(bool), integer(s64), number(f64), text(string) }, for the
 * wrappers below (as a parameter it is flattened, see llm_context_set_parameter). */
enum llm_value_kind { LLM_VALUE_BOOLEAN = 0, LLM_VALUE_INTEGER = 1, LLM_VALUE_NUMBER = 2, LLM_VALUE_TEXT = 3 };
typedef struct {
    uint8_t kind;
    union {
        bool boolean;
        int64_t integer;
        double number;
        llm_string text;
    } of;
} llm_value;

/* enum finish-reason (u8) */
enum llm_finish_reason { LLM_FINISH_STOP = 0, LLM_FINISH_LENGTH = 1, LLM_FINISH_CANCELLED = 2, LLM_FINISH_ERROR = 3 };

/* record usage: u32 x3, f64 at 16 and 24, option<finish-reason> at 32 (tag) and 33; 40 bytes, align 8. */
typedef struct {
    uint32_t prompt_tokens;
    uint32_t evaluated_tokens;
    uint32_t completion_tokens;
    double prompt_ms;
    double total_ms;
    uint8_t has_finish;
    uint8_t finish; /* enum llm_finish_reason, when has_finish */
} llm_usage;

/* Return areas: result<own<T>, error> and result<_, error>: tag at 0, payload at 4 (28 bytes);
 * result<option<string>, error>: the same with an option<string> as the ok payload. */
typedef struct {
    uint8_t is_err;
    union {
        llm_handle ok;
        llm_error err;
    } of;
} llm_result_handle;

typedef struct {
    uint8_t is_err;
    union {
        llm_error err;
    } of;
} llm_result_unit;

typedef struct {
    uint8_t is_err;
    union {
        llm_option_string ok;
        llm_error err;
    } of;
} llm_result_chunk;

/* result<string, error>: the same, a string as the ok payload. */
typedef struct {
    uint8_t is_err;
    union {
        llm_string ok;
        llm_error err;
    } of;
} llm_result_string;

/* record token-info { text: string, logprob: f64, probability: f64, rank: u32, entropy: f64,
 * top: list<tuple<string, f64>> } (0.1.1): 48 bytes, align 8; each alternative 16 bytes. */
typedef struct {
    llm_string text;
    double logprob;
} llm_alternative;

typedef struct {
    llm_string text;         /* offset 0 */
    double logprob;          /* offset 8 */
    double probability;      /* offset 16 */
    uint32_t rank;           /* offset 24 */
    double entropy;          /* offset 32 */
    llm_alternative *top;    /* offset 40: a list's pointer and length */
    size_t top_len;
} llm_token_info;

/* result<option<token-info>, error>: tag at 0, payload at 8 (the option: tag at 0, record at 8). */
typedef struct {
    uint8_t is_some;
    llm_token_info value;
} llm_option_token_info;

typedef struct {
    uint8_t is_err;
    union {
        llm_option_token_info ok;
        llm_error err;
    } of;
} llm_result_token;

_Static_assert(sizeof(llm_alternative) == 16, "tuple<string, f64> layout");
_Static_assert(sizeof(llm_token_info) == 48 && offsetof(llm_token_info, rank) == 24 &&
                   offsetof(llm_token_info, entropy) == 32 && offsetof(llm_token_info, top) == 40,
               "record token-info layout");
_Static_assert(sizeof(llm_result_token) == 64 && offsetof(llm_result_token, of) == 8 &&
                   offsetof(llm_option_token_info, value) == 8,
               "result<option<token-info>, error> layout");
_Static_assert(sizeof(llm_string) == 8, "string is {ptr, len}");
_Static_assert(sizeof(llm_error) == 24 && offsetof(llm_error, message) == 4 && offsetof(llm_error, name) == 12,
               "record error layout");
_Static_assert(sizeof(llm_result_handle) == 28 && offsetof(llm_result_handle, of) == 4, "result<handle, error> layout");
_Static_assert(sizeof(llm_result_unit) == 28, "result<_, error> layout");
_Static_assert(sizeof(llm_result_string) == 28, "result<string, error> layout");
_Static_assert(sizeof(llm_result_chunk) == 28 && offsetof(llm_result_chunk, of) == 4,
               "result<option<string>, error> layout");
_Static_assert(sizeof(llm_usage) == 40 && offsetof(llm_usage, prompt_ms) == 16 && offsetof(llm_usage, has_finish) == 32 &&
                   offsetof(llm_usage, finish) == 33,
               "record usage layout");

/* ---- the imports: core signatures as `component embed --dummy-names legacy` prints them -- */

#define LLM_IMPORT(interface, name) \
    __attribute__((import_module("wasinn:llm/" interface "@0.1.1"), import_name(name)))

/* graphs: load-by-name(name: string) -> result<graph, error>  (i32 i32 i32) */
LLM_IMPORT("graphs", "load-by-name")
extern void llm_import_load_by_name(const char *name, size_t name_len, llm_result_handle *ret);
/* graphs: [method]graph.init-context(self) -> result<context, error>  (i32 i32) */
LLM_IMPORT("graphs", "[method]graph.init-context")
extern void llm_import_graph_init_context(llm_handle graph, llm_result_handle *ret);
LLM_IMPORT("graphs", "[resource-drop]graph") extern void llm_graph_drop(llm_handle graph);

/* prompt: [method]context.set-parameter(self, name: string, value: value) -> result<_, error>
 * (i32 i32 i32 i32 i64 i32 i32): the variant `value` flattens to its case (i32) and the
 * cases' payloads joined slot by slot: slot 1 holds a bool (0/1), an s64, an f64's bits or a
 * string's pointer, so it is an i64; slot 2 is a string's length. */
LLM_IMPORT("prompt", "[method]context.set-parameter")
extern void llm_import_context_set_parameter(llm_handle context, const char *name, size_t name_len, int32_t kind,
                                             int64_t payload, int32_t payload_len, llm_result_unit *ret);
/* prompt: [method]context.compute(self, prompt: string) -> result<string, error>  (i32 i32 i32 i32) */
LLM_IMPORT("prompt", "[method]context.compute")
extern void llm_import_context_compute(llm_handle context, const char *prompt, size_t prompt_len,
                                       llm_result_string *ret);
/* prompt: [method]context.generate(self, prompt: string) -> result<generation, error>  (i32 i32 i32 i32) */
LLM_IMPORT("prompt", "[method]context.generate")
extern void llm_import_context_generate(llm_handle context, const char *prompt, size_t prompt_len,
                                        llm_result_handle *ret);
/* prompt (0.1.1): [method]context.fork(self) -> result<context, error>  (i32 i32) */
LLM_IMPORT("prompt", "[method]context.fork")
extern void llm_import_context_fork(llm_handle context, llm_result_handle *ret);
LLM_IMPORT("prompt", "[resource-drop]context") extern void llm_context_drop(llm_handle context);

/* prompt: [method]generation.next-chunk(self) -> result<option<string>, error>  (i32 i32) */
LLM_IMPORT("prompt", "[method]generation.next-chunk")
extern void llm_import_generation_next_chunk(llm_handle generation, llm_result_chunk *ret);
/* prompt: [method]generation.cancel(self)  (i32) */
/* tokens (0.1.1; world llm-token-imports): next-token(borrow<generation>) -> result<option<token-info>, error>  (i32 i32) */
LLM_IMPORT("tokens", "next-token")
extern void llm_import_generation_next_token(llm_handle generation, llm_result_token *ret);
LLM_IMPORT("prompt", "[method]generation.cancel") extern void llm_generation_cancel(llm_handle generation);
/* prompt: [method]generation.usage(self) -> usage  (i32 i32) */
LLM_IMPORT("prompt", "[method]generation.usage")
extern void llm_import_generation_usage(llm_handle generation, llm_usage *ret);
/* Dropping an unfinished generation cancels it. */
LLM_IMPORT("prompt", "[resource-drop]generation") extern void llm_generation_drop(llm_handle generation);

/* The host allocates the strings it returns in our memory through this export. */
#ifndef WASINN_CABI_REALLOC
#define WASINN_CABI_REALLOC
__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align,
                                                                size_t new_size)
{
    (void)old_size; /* malloc's alignment (16) covers every canonical-ABI alignment */
    if (new_size == 0)
        return (void *)align;
    void *p = realloc(old, new_size);
    if (!p)
        abort();
    return p;
}
#endif

/* ---- wrappers: an error is printed as the C guests print theirs, then exit 2 ----------- */

static inline const char *llm_error_code_name(uint8_t code)
{
    static const char *const names[] = {"invalid-argument", "invalid-parameter", "not-found",
                                        "unsupported-operation", "busy", "too-large", "runtime-error"};
    return code < sizeof names / sizeof names[0] ? names[code] : "unknown";
}

static inline void llm_error_free(llm_error *err)
{
    free(err->message.ptr);
    if (err->name.is_some)
        free(err->name.value.ptr);
}

/* "error: CALL failed: CODE (NAME): MESSAGE" on stderr, then exit 2 (a component's exit
 * status reaches the host as 1: WASI 0.2's exit takes only ok or err). */
static inline void llm_fail(const char *call, llm_error *err)
{
    fprintf(stderr, "error: %s failed: %s", call, llm_error_code_name(err->code));
    if (err->name.is_some)
        fprintf(stderr, " (%.*s)", (int)err->name.value.len, err->name.value.ptr);
    fprintf(stderr, ": %.*s\n", (int)err->message.len, err->message.ptr);
    llm_error_free(err);
    exit(2);
}

/* The handle a call returned; its error is fatal. */
static inline llm_handle llm_handle_or_fail(const char *call, llm_result_handle *r)
{
    if (r->is_err)
        llm_fail(call, &r->of.err);
    return r->of.ok;
}

static inline llm_handle llm_load_by_name(const char *name)
{
    llm_result_handle r;
    llm_import_load_by_name(name, strlen(name), &r);
    return llm_handle_or_fail("load-by-name", &r);
}

static inline llm_handle llm_graph_init_context(llm_handle graph)
{
    llm_result_handle r;
    llm_import_graph_init_context(graph, &r);
    return llm_handle_or_fail("init-context", &r);
}

static inline void llm_context_set_parameter(llm_handle context, const char *name, llm_value value)
{
    int64_t payload = 0;
    int32_t payload_len = 0;
    switch (value.kind) {
    case LLM_VALUE_BOOLEAN: payload = value.of.boolean; break;
    case LLM_VALUE_INTEGER: payload = value.of.integer; break;
    case LLM_VALUE_NUMBER: memcpy(&payload, &value.of.number, sizeof payload); break; /* the f64's bits */
    case LLM_VALUE_TEXT:
        payload = (int64_t)(uintptr_t)value.of.text.ptr;
        payload_len = (int32_t)value.of.text.len;
        break;
    }
    llm_result_unit r;
    llm_import_context_set_parameter(context, name, strlen(name), value.kind, payload, payload_len, &r);
    if (r.is_err)
        llm_fail("set-parameter", &r.of.err);
}

static inline llm_handle llm_context_generate(llm_handle context, const char *prompt, size_t prompt_len)
{
    llm_result_handle r;
    llm_import_context_generate(context, prompt, prompt_len, &r);
    return llm_handle_or_fail("generate", &r);
}

/* A new context that continues as `context` would (parameters, prompt, model state). */
static inline llm_handle llm_context_fork(llm_handle context)
{
    llm_result_handle r;
    llm_import_context_fork(context, &r);
    return llm_handle_or_fail("fork", &r);
}

/* An error that ends an answer: a full context (too-large) with "note: context full" on
 * stderr, as the preview1 guests do; any other is fatal. */
static inline void llm_answer_ended(const char *call, llm_error *err)
{
    if (err->code != LLM_TOO_LARGE)
        llm_fail(call, err);
    fputs("note: context full\n", stderr);
    llm_error_free(err);
}

/* The next chunk (malloc'd, *len bytes, not NUL-terminated), or NULL once the answer is
 * complete. A full context (too-large) ends the answer with "note: context full" on
 * stderr, as the preview1 guests do; any other error is fatal. */
static inline char *llm_generation_next_chunk(llm_handle generation, size_t *len)
{
    llm_result_chunk r;
    llm_import_generation_next_chunk(generation, &r);
    if (r.is_err) {
        llm_answer_ended("next-chunk", &r.of.err);
        return NULL;
    }
    if (!r.of.ok.is_some)
        return NULL;
    *len = r.of.ok.value.len;
    return r.of.ok.value.ptr;
}

/* The next token with its probabilities into *info (free it with llm_token_info_free), or
 * false once the answer is complete (or the context is full, llm_answer_ended). */
static inline bool llm_generation_next_token(llm_handle generation, llm_token_info *info)
{
    llm_result_token r;
    llm_import_generation_next_token(generation, &r);
    if (r.is_err) {
        llm_answer_ended("next-token", &r.of.err);
        return false;
    }
    if (!r.of.ok.is_some)
        return false;
    *info = r.of.ok.value;
    return true;
}

/* Empty strings and lists were never allocated (cabi_realloc gives their alignment). */
static inline void llm_token_info_free(llm_token_info *info)
{
    if (info->text.len)
        free(info->text.ptr);
    for (size_t i = 0; i < info->top_len; i++)
        if (info->top[i].text.len)
            free(info->top[i].text.ptr);
    if (info->top_len)
        free(info->top);
}

static inline llm_usage llm_generation_usage(llm_handle generation)
{
    llm_usage usage;
    llm_import_generation_usage(generation, &usage);
    return usage;
}

/* "usage: {...}" on stderr, with the keys of the preview1 guests' usage JSON. */
static inline void llm_print_usage(const llm_usage *usage)
{
    fprintf(stderr, "usage: {\"input_tokens\": %u, \"output_tokens\": %u}\n", (unsigned)usage->prompt_tokens,
            (unsigned)usage->completion_tokens);
}

/* The whole answer on stdout, each chunk as soon as it comes (flushed: it reaches the host
 * now, not at exit), then a newline; its usage on stderr. The generation is dropped. */
static inline void llm_generation_print(llm_handle generation)
{
    size_t chunk_len;
    char *chunk;
    while ((chunk = llm_generation_next_chunk(generation, &chunk_len))) {
        fwrite(chunk, 1, chunk_len, stdout);
        fflush(stdout);
        free(chunk);
    }
    fputs("\n", stdout);
    fflush(stdout);
    llm_usage usage = llm_generation_usage(generation);
    llm_print_usage(&usage);
    llm_generation_drop(generation);
}

/* ---- options from the environment, as wasi_nn.h reads them ----------------------------- */

/* The variables of WasmEdge's examples, each set as the parameter of the same name with
 * `-` for `_`, typed as the host's option is. A value that does not parse as that type is
 * sent as text, so that the host rejects it with invalid-parameter and names it (the
 * preview1 guests likewise pass a bad number on as it is); a boolean other than 1, true,
 * 0, false is a usage error (exit 1). */
static inline void llm_set_parameters_from_env(llm_handle context)
{
    static const struct {
        const char *env, *name;
        char kind; /* 'i' integer, 'n' number, 's' text, 'b' boolean */
    } options[] = {
        {"n_predict", "n-predict", 'i'},
        {"ctx_size", "ctx-size", 'i'},
        {"n_gpu_layers", "n-gpu-layers", 'i'},
        {"batch_size", "batch-size", 'i'},
        {"ubatch_size", "ubatch-size", 'i'},
        {"threads", "threads", 'i'},
        {"temp", "temp", 'n'},
        {"top_p", "top-p", 'n'},
        {"top_k", "top-k", 'i'},
        {"min_p", "min-p", 'n'},
        {"repeat_penalty", "repeat-penalty", 'n'},
        {"seed", "seed", 'i'},
        {"reverse_prompt", "reverse-prompt", 's'},
        {"enable_log", "enable-log", 'b'},
        {"stream_stdout", "stream-stdout", 'b'},
        {"embedding", "embedding", 'b'},
    };
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const char *text = getenv(options[i].env);
        char *end = NULL;
        if (!text || !*text)
            continue;
        llm_value value = {.kind = LLM_VALUE_TEXT, .of.text = {(char *)text, strlen(text)}};
        if (options[i].kind == 'i') {
            long long n = strtoll(text, &end, 10);
            if (*end == '\0')
                value = (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = n};
        } else if (options[i].kind == 'n') {
            double x = strtod(text, &end);
            if (*end == '\0')
                value = (llm_value){.kind = LLM_VALUE_NUMBER, .of.number = x};
        } else if (options[i].kind == 'b') {
            if (!strcmp(text, "1") || !strcmp(text, "true")) {
                value = (llm_value){.kind = LLM_VALUE_BOOLEAN, .of.boolean = true};
            } else if (!strcmp(text, "0") || !strcmp(text, "false")) {
                value = (llm_value){.kind = LLM_VALUE_BOOLEAN, .of.boolean = false};
            } else {
                fprintf(stderr, "error: %s must be 1, true, 0 or false\n", options[i].env);
                exit(1);
            }
        }
        llm_context_set_parameter(context, options[i].name, value);
    }
}

#endif
