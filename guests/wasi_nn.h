/* WasmEdge's preview1 wasi_ephemeral_nn ABI plus the helpers the guests share.
 * Header-only so that each guest stays a single .c file built on its own. */
#ifndef WASI_NN_H
#define WASI_NN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t graph;
typedef uint32_t graph_execution_context;

enum nn_errno {
    NN_ERRNO_SUCCESS = 0,
    NN_ERRNO_INVALID_ARGUMENT = 1,
    NN_ERRNO_INVALID_ENCODING = 2,
    NN_ERRNO_MISSING_MEMORY = 3,
    NN_ERRNO_BUSY = 4,
    NN_ERRNO_RUNTIME_ERROR = 5,
    NN_ERRNO_UNSUPPORTED_OPERATION = 6,
    NN_ERRNO_TOO_LARGE = 7,
    NN_ERRNO_NOT_FOUND = 8,
    NN_ERRNO_END_OF_SEQUENCE = 100,
    NN_ERRNO_CONTEXT_FULL = 101,
    NN_ERRNO_PROMPT_TOO_LONG = 102,
    NN_ERRNO_MODEL_NOT_FOUND = 103,
};

enum nn_tensor_type {
    NN_TENSOR_F16 = 0,
    NN_TENSOR_F32 = 1,
    NN_TENSOR_F64 = 2,
    NN_TENSOR_U8 = 3,
    NN_TENSOR_I32 = 4,
    NN_TENSOR_I64 = 5,
};

enum nn_target {
    NN_TARGET_CPU = 0,
    NN_TARGET_GPU = 1,
    NN_TARGET_TPU = 2,
    NN_TARGET_AUTO = 3, /* WasmEdge only */
};

/* WasmEdge numbering; the WIT and WAMR swap 5 and 6. */
enum nn_encoding {
    NN_ENCODING_OPENVINO = 0,
    NN_ENCODING_ONNX = 1,
    NN_ENCODING_TENSORFLOW = 2,
    NN_ENCODING_PYTORCH = 3,
    NN_ENCODING_TENSORFLOWLITE = 4,
    NN_ENCODING_AUTODETECT = 5,
    NN_ENCODING_GGML = 6,
};

/* One entry of the builder array given to load(). */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} nn_builder;

typedef struct {
    const uint32_t *dims;
    uint32_t dims_len;
    uint8_t type; /* enum nn_tensor_type; the host reads this single byte */
    uint8_t padding[3];
    const void *data;
    uint32_t data_len; /* bytes */
} nn_tensor;

_Static_assert(sizeof(nn_builder) == 8, "builder entry is {u32 ptr, u32 len}");
_Static_assert(sizeof(nn_tensor) == 20, "tensor is 20 bytes in the preview1 ABI");
_Static_assert(offsetof(nn_tensor, type) == 8 && offsetof(nn_tensor, data) == 12,
               "tensor field offsets of the preview1 ABI");

#define NN_IMPORT(name) \
    __attribute__((import_module("wasi_ephemeral_nn"), import_name(name)))

NN_IMPORT("load")
int32_t wasi_nn_load(const nn_builder *builders, uint32_t builders_len, uint32_t encoding,
                     uint32_t target, graph *out_graph);
NN_IMPORT("load_by_name")
int32_t wasi_nn_load_by_name(const char *name, uint32_t name_len, graph *out_graph);
NN_IMPORT("load_by_name_with_config")
int32_t wasi_nn_load_by_name_with_config(const char *name, uint32_t name_len,
                                         const char *config, uint32_t config_len,
                                         graph *out_graph);
NN_IMPORT("init_execution_context")
int32_t wasi_nn_init_execution_context(graph g, graph_execution_context *out_ctx);
NN_IMPORT("set_input")
int32_t wasi_nn_set_input(graph_execution_context ctx, uint32_t index, const nn_tensor *tensor);
NN_IMPORT("compute")
int32_t wasi_nn_compute(graph_execution_context ctx);
NN_IMPORT("get_output")
int32_t wasi_nn_get_output(graph_execution_context ctx, uint32_t index, void *out_buf,
                           uint32_t out_buf_max, uint32_t *out_written);
NN_IMPORT("compute_single")
int32_t wasi_nn_compute_single(graph_execution_context ctx);
NN_IMPORT("get_output_single")
int32_t wasi_nn_get_output_single(graph_execution_context ctx, uint32_t index, void *out_buf,
                                  uint32_t out_buf_max, uint32_t *out_written);
NN_IMPORT("fini_single")
int32_t wasi_nn_fini_single(graph_execution_context ctx);
NN_IMPORT("unload")
int32_t wasi_nn_unload(graph g);
NN_IMPORT("finalize_execution_context")
int32_t wasi_nn_finalize_execution_context(graph_execution_context ctx);

/* A guest that reads its turns from stdin (rather than a prompt argument) says so by
 * exporting this function: notebooks then feed each cell to it as one turn. */
#define WASINN_LAB_STDIN_TURNS                                                            \
    __attribute__((export_name("wasinn-lab.input.stdin"))) void wasinn_lab_input_stdin(void) {}

static inline const char *nn_errno_name(int err)
{
    switch (err) {
    case NN_ERRNO_SUCCESS: return "success";
    case NN_ERRNO_INVALID_ARGUMENT: return "invalid-argument";
    case NN_ERRNO_INVALID_ENCODING: return "invalid-encoding";
    case NN_ERRNO_MISSING_MEMORY: return "missing-memory";
    case NN_ERRNO_BUSY: return "busy";
    case NN_ERRNO_RUNTIME_ERROR: return "runtime-error";
    case NN_ERRNO_UNSUPPORTED_OPERATION: return "unsupported-operation";
    case NN_ERRNO_TOO_LARGE: return "too-large";
    case NN_ERRNO_NOT_FOUND: return "not-found";
    case NN_ERRNO_END_OF_SEQUENCE: return "end-of-sequence";
    case NN_ERRNO_CONTEXT_FULL: return "context-full";
    case NN_ERRNO_PROMPT_TOO_LONG: return "prompt-too-long";
    case NN_ERRNO_MODEL_NOT_FOUND: return "model-not-found";
    default: return "unknown";
    }
}

static inline void nn_check(int err, const char *call)
{
    if (err == NN_ERRNO_SUCCESS)
        return;
    fprintf(stderr, "error: %s failed: errno %d (%s)\n", call, err, nn_errno_name(err));
    exit(2);
}

/* Usage and I/O failures, as opposed to wasi-nn errors, exit with 1. */
static inline void nn_fail(const char *message)
{
    fprintf(stderr, "%s\n", message);
    exit(1);
}

static inline void *nn_xrealloc(void *p, size_t size)
{
    p = realloc(p, size);
    if (!p)
        nn_fail("error: out of memory");
    return p;
}

/* Growable byte string, always NUL-terminated once anything has been added. */
typedef struct {
    char *p;
    size_t len, cap;
} nn_buf;

static inline void nn_buf_add(nn_buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = nn_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void nn_buf_str(nn_buf *b, const char *s)
{
    nn_buf_add(b, s, strlen(s));
}

static inline void nn_buf_json_string(nn_buf *b, const char *s)
{
    nn_buf_str(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            nn_buf_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            nn_buf_str(b, esc);
        } else {
            nn_buf_add(b, s, 1);
        }
    }
    nn_buf_str(b, "\"");
}

static inline char *nn_read_all(FILE *f, size_t *len)
{
    nn_buf b = {0};
    char chunk[4096];
    size_t n;
    nn_buf_add(&b, "", 0);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        nn_buf_add(&b, chunk, n);
    if (ferror(f))
        nn_fail("error: reading input failed");
    *len = b.len;
    return b.p;
}

/* argv[1] is the model name; at most max_args arguments in all. */
static inline const char *nn_model_arg(int argc, char **argv, int max_args, const char *usage)
{
    if (argc < 2 || argc > max_args + 1) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(1);
    }
    return argv[1];
}

/* argv[2] when given, else all of stdin; malloc'd and NUL-terminated. */
static inline char *nn_prompt_arg(int argc, char **argv, size_t *len)
{
    nn_buf b = {0};
    if (argc < 3)
        return nn_read_all(stdin, len);
    nn_buf_str(&b, argv[2]);
    *len = b.len;
    return b.p;
}

/* Options come from the environment variables of WasmEdge's examples. Members of
 * extra_json_members (e.g. "\"embedding\":true") are always sent and win over the
 * variable for the same key, which is skipped rather than duplicated because JSON
 * parsers disagree on which duplicate counts. */
static inline void nn_load_with(const char *model_name, const char *extra_json_members,
                                graph *out)
{
    static const struct {
        const char *env, *key;
        char kind; /* 'n' number written raw, 's' string, 'b' boolean */
    } options[] = {
        {"n_predict", "n-predict", 'n'},
        {"ctx_size", "ctx-size", 'n'},
        {"n_gpu_layers", "n-gpu-layers", 'n'},
        {"batch_size", "batch-size", 'n'},
        {"ubatch_size", "ubatch-size", 'n'},
        {"threads", "threads", 'n'},
        {"temp", "temp", 'n'},
        {"top_p", "top-p", 'n'},
        {"top_k", "top-k", 'n'},
        {"min_p", "min-p", 'n'},
        {"repeat_penalty", "repeat-penalty", 'n'},
        {"seed", "seed", 'n'},
        {"reverse_prompt", "reverse-prompt", 's'},
        {"enable_log", "enable-log", 'b'},
        {"stream_stdout", "stream-stdout", 'b'},
        {"embedding", "embedding", 'b'},
    };
    const char *extra = extra_json_members ? extra_json_members : "";
    nn_buf config = {0};
    nn_buf_str(&config, "{");
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const char *value = getenv(options[i].env);
        char quoted_key[32];
        if (!value || !*value)
            continue;
        snprintf(quoted_key, sizeof quoted_key, "\"%s\"", options[i].key);
        if (strstr(extra, quoted_key))
            continue;
        if (config.len > 1)
            nn_buf_str(&config, ",");
        nn_buf_str(&config, quoted_key);
        nn_buf_str(&config, ":");
        if (options[i].kind == 's') {
            nn_buf_json_string(&config, value);
        } else if (options[i].kind == 'n') {
            nn_buf_str(&config, value);
        } else if (!strcmp(value, "1") || !strcmp(value, "true")) {
            nn_buf_str(&config, "true");
        } else if (!strcmp(value, "0") || !strcmp(value, "false")) {
            nn_buf_str(&config, "false");
        } else {
            fprintf(stderr, "error: %s must be 1, true, 0 or false\n", options[i].env);
            exit(1);
        }
    }
    if (*extra) {
        if (config.len > 1)
            nn_buf_str(&config, ",");
        nn_buf_str(&config, extra);
    }
    nn_buf_str(&config, "}");

    if (config.len > 2)
        nn_check(wasi_nn_load_by_name_with_config(model_name, strlen(model_name), config.p,
                                                  config.len, out),
                 "load_by_name_with_config");
    else
        nn_check(wasi_nn_load_by_name(model_name, strlen(model_name), out), "load_by_name");
    free(config.p);
}

static inline void nn_load(const char *model_name, graph *out)
{
    nn_load_with(model_name, NULL, out);
}

/* GGML guests send the prompt as a u8 tensor of dims [1] whatever its length. */
static inline void nn_set_prompt(graph_execution_context ctx, const char *text, size_t len)
{
    static const uint32_t dims[1] = {1};
    nn_tensor t = {
        .dims = dims, .dims_len = 1, .type = NN_TENSOR_U8, .data = text, .data_len = len,
    };
    nn_check(wasi_nn_set_input(ctx, 0, &t), "set_input");
}

/* Returns a malloc'd, NUL-terminated copy of output `index`. On too-large the host
 * reports the size it needs in out_written, so one retry at that size suffices. */
static inline char *nn_read_output(graph_execution_context ctx, uint32_t index, int single,
                                   size_t *len)
{
    const char *call = single ? "get_output_single" : "get_output";
    uint32_t cap = 4096;
    for (int retried = 0;; retried = 1) {
        char *buf = nn_xrealloc(NULL, (size_t)cap + 1);
        uint32_t written = 0;
        int32_t err = single ? wasi_nn_get_output_single(ctx, index, buf, cap, &written)
                             : wasi_nn_get_output(ctx, index, buf, cap, &written);
        if (err == NN_ERRNO_TOO_LARGE && !retried && written > cap) {
            free(buf);
            cap = written;
            continue;
        }
        nn_check(err, call);
        if (written > cap) {
            fprintf(stderr, "error: %s wrote %u bytes into a %u-byte buffer\n", call,
                    (unsigned)written, (unsigned)cap);
            exit(2);
        }
        buf[written] = '\0';
        *len = written;
        return buf;
    }
}

/* Prints the usage JSON (output index 1) as "usage: {...}" on stderr. */
static inline void nn_print_usage(graph_execution_context ctx)
{
    size_t len;
    char *usage = nn_read_output(ctx, 1, 0, &len);
    fprintf(stderr, "usage: %s\n", usage);
    free(usage);
}

/* A full context is not fatal: the text generated until then is still readable.
 * Returns 0 when generation stopped for that reason. */
static inline int nn_check_generation(int32_t err, const char *call)
{
    if (err == NN_ERRNO_CONTEXT_FULL) {
        fputs("note: context full\n", stderr);
        return 0;
    }
    nn_check(err, call);
    return 1;
}

/* One streaming step: the newest token's text (malloc'd), or NULL once generation
 * has ended (end of sequence or full context). */
/* One-shot completion: compute on the prompt set, then print all the text (output 0). */
static inline void nn_complete(graph_execution_context ctx)
{
    size_t len;
    nn_check_generation(wasi_nn_compute(ctx), "compute");
    char *out = nn_read_output(ctx, 0, 0, &len);
    fwrite(out, 1, len, stdout);
    fputs("\n", stdout);
    fflush(stdout);
    free(out);
}

static inline char *nn_next_token(graph_execution_context ctx, size_t *len)
{
    int32_t err = wasi_nn_compute_single(ctx);
    if (err == NN_ERRNO_END_OF_SEQUENCE || !nn_check_generation(err, "compute_single"))
        return NULL;
    return nn_read_output(ctx, 0, 1, len);
}

#endif
