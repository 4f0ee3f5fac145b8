// world: fuzz-imports
/* The WIT front-ends' fuzzer, a test guest (wasinn_lab/fuzz_wit.py drives it): random
 * sequences of every wasi:nn and wasinn:llm call (graphs, prompt, backends, preview1) with
 * hostile arguments: tensors whose data does not match their type and dims, huge dims,
 * unknown parameter names and wrongly typed or non-finite values, broken config JSON,
 * prompts too long for the context, chunks pulled after cancel, after a newer generation
 * and after their context was dropped, graphs unloaded under their contexts.
 *
 *     fuzz_wit SEED CALLS TEXT_MODEL [TRAP|none [TEXT_SHARE]]
 *
 * What the host answers is checked where the WIT or guests/wit/README.md says what it must
 * be (an unknown name is not-found and names it, a mismatched tensor invalid-argument ...);
 * each call's outcome is tallied. With TRAP, the run ends with one call that the canonical
 * ABI refuses, so that the guest traps: dropped-handle, foreign-handle (a tensor as a
 * graph), double-drop, invalid-utf8, string-out-of-bounds, unknown-enum-case (a tensor type)
 * or hostile-realloc (cabi_realloc answers outside memory). The host must survive each, and
 * free all.
 * TEXT_SHARE: the percentage of calls made on contexts and generations (40), the calls
 * that run the text model.
 *
 * stderr: "fuzz: tally OP OUTCOME N" per op and outcome, "fuzz: wrong OP: WHY" for each
 * answer that is not the documented one, and, before a deliberate trap, "fuzz: trap KIND".
 * Exit status 0 (a component's host sees 0 or 1). */
#define WASINN_CABI_REALLOC /* ours below: it can be made to misbehave */
#include <math.h>

#include "wasi_nn_wit.h"
#include "wasinn_llm.h"

static int hostile_realloc;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align,
                                                                size_t new_size)
{
    (void)old_size;
    if (hostile_realloc)
        return (void *)(uintptr_t)0xFFFFFFF0u; /* past the end of any wasm32 memory */
    (void)align; /* malloc's alignment (16) covers every canonical-ABI alignment */
    if (new_size == 0)
        return NULL; /* aligned for anything, and free() takes it: an empty list is freed like any */
    void *p = realloc(old, new_size);
    if (!p)
        abort();
    return p;
}

/* ---- the imports the shared headers do not declare (core signatures as embed -t prints) --- */

typedef struct { uint8_t kind; union { uint8_t boolean; int64_t integer; double number; llm_string text; } of; } fz_value;
typedef struct { uint8_t is_some; fz_value value; } fz_option_value;
typedef struct { llm_string name; fz_value value; } fz_parameter;
typedef struct { uint8_t is_err; union { wnn_list ok; llm_error err; } of; } fz_result_list;
typedef struct { llm_handle graph; uint8_t text; llm_string build; } fz_loaded;
typedef struct { uint8_t is_err; union { fz_loaded ok; uint8_t err; } of; } fz_result_loaded;
typedef struct { uint8_t is_err; uint8_t err; } fz_result_kind;
typedef struct { uint8_t is_err; union { llm_string ok; uint8_t err; } of; } fz_result_kind_string;
_Static_assert(sizeof(fz_value) == 16 && sizeof(fz_option_value) == 24 && sizeof(fz_parameter) == 24, "value layouts");
_Static_assert(sizeof(fz_result_loaded) == 20 && offsetof(fz_result_loaded, of) == 4, "result<loaded> layout");

WNN_IMPORT("graph", "load")
extern void fz_nn_load(const wnn_list *builders, size_t n, int32_t encoding, int32_t target, wnn_result_handle *ret);
LLM_IMPORT("backends", "list-backends") extern void fz_list_backends(wnn_list *ret);
LLM_IMPORT("backends", "backend-properties")
extern void fz_backend_properties(const char *name, size_t len, fz_result_list *ret);
LLM_IMPORT("graphs", "[method]graph.list-properties") extern void fz_list_properties(llm_handle graph, wnn_list *ret);
LLM_IMPORT("graphs", "[method]graph.get-property")
extern void fz_get_property(llm_handle graph, const char *key, size_t len, llm_option_string *ret);
LLM_IMPORT("graphs", "[method]graph.set-property")
extern void fz_set_property(llm_handle graph, const char *key, size_t len, const char *value, size_t value_len,
                            llm_result_unit *ret);
LLM_IMPORT("prompt", "[method]context.list-parameters") extern void fz_list_parameters(llm_handle context, wnn_list *ret);
LLM_IMPORT("prompt", "[method]context.get-parameter")
extern void fz_get_parameter(llm_handle context, const char *name, size_t len, fz_option_value *ret);
#define P1_IMPORT(name) __attribute__((import_module("wasinn:llm/preview1@0.1.1"), import_name(name)))
P1_IMPORT("load-by-name")
extern void fz_p1_load_by_name(const char *name, size_t len, int32_t has_config, const void *config, size_t config_len,
                               fz_result_loaded *ret);
P1_IMPORT("load")
extern void fz_p1_load(const wnn_list *builders, size_t n, int32_t encoding, int32_t target, fz_result_loaded *ret);
P1_IMPORT("unload") extern void fz_p1_unload(llm_handle graph, fz_result_kind *ret);
P1_IMPORT("configure") extern void fz_p1_configure(llm_handle context, const void *config, size_t len, fz_result_kind *ret);
P1_IMPORT("embed") extern void fz_p1_embed(llm_handle context, const char *text, size_t len, fz_result_kind_string *ret);

/* ---- randomness, tallies, checks ------------------------------------------------------------ */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) /* uniform in [0, n) (splitmix64) */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) % n);
}
#define PICK(array) (array)[rnd(sizeof(array) / sizeof((array)[0]))]

enum { OK = 0, NN = 1, LLM = 10, P1 = 17, N_OUTCOMES = 27 };
static const char *const OUTCOMES[N_OUTCOMES] = {
    "ok", "nn:invalid-argument", "nn:invalid-encoding", "nn:timeout", "nn:runtime-error", "nn:unsupported-operation",
    "nn:too-large", "nn:not-found", "nn:security", "nn:unknown", "llm:invalid-argument", "llm:invalid-parameter",
    "llm:not-found", "llm:unsupported-operation", "llm:busy", "llm:too-large", "llm:runtime-error",
    "p1:invalid-argument", "p1:invalid-encoding", "p1:busy", "p1:runtime-error", "p1:unsupported-operation",
    "p1:too-large", "p1:not-found", "p1:context-full", "p1:prompt-too-long", "p1:model-not-found"};
#define OPS(X) X(nn_load_by_name) X(nn_load) X(nn_init) X(nn_tensor) X(nn_tensor_read) X(nn_compute) X(nn_drop) \
    X(backends) X(backend_properties) X(load_by_name) X(properties) X(set_property) X(init_context) \
    X(parameters) X(set_parameter) X(compute) X(generate) X(next_chunk) X(cancel) X(usage) X(drop) \
    X(p1_load_by_name) X(p1_load) X(p1_unload) X(p1_configure) X(p1_embed)
#define AS_ENUM(op) op_##op,
#define AS_NAME(op) #op,
enum { OPS(AS_ENUM) N_OPS };
static const char *const OP_NAMES[N_OPS] = {OPS(AS_NAME)};
static unsigned tally[N_OPS][N_OUTCOMES];
static unsigned wrong_count;

static void wrong(int op, const char *why, int outcome)
{
    if (++wrong_count <= 50)
        fprintf(stderr, "fuzz: wrong %s: %s (got %s)\n", OP_NAMES[op], why, OUTCOMES[outcome]);
}
/* Count the outcome; where `want` is not -1, it is the documented one. */
static void outcome(int op, int got, int want, const char *why)
{
    tally[op][got]++;
    if (want >= 0 && got != want)
        wrong(op, why, got);
}

static void report(void)
{
    for (int op = 0; op < N_OPS; op++)
        for (int o = 0; o < N_OUTCOMES; o++)
            if (tally[op][o])
                fprintf(stderr, "fuzz: tally %s %s %u\n", OP_NAMES[op], OUTCOMES[o], tally[op][o]);
    fflush(stderr);
}

/* An llm error: its code as an outcome; its record freed. A `name` is checked where wanted. */
static int llm_outcome(int op, llm_error *err, const char *name, size_t name_len)
{
    int got = LLM + err->code;
    if (name && !(err->name.is_some && err->name.value.len == name_len && !memcmp(err->name.value.ptr, name, name_len)))
        wrong(op, "the error does not name what it is about", got);
    if (!err->message.len)
        wrong(op, "the error has no message", got);
    llm_error_free(err);
    return got;
}

static int nn_outcome(wnn_handle error) /* the error resource read and dropped */
{
    wnn_list data;
    wnn_error_data(error, &data);
    int32_t code = wnn_error_code(error);
    free(data.ptr);
    wnn_error_drop(error);
    return NN + code;
}

/* ---- what the guest holds ------------------------------------------------------------------ */

#define POOL 12
/* A graph or context (flags: ECHO, EMBEDDING; serial: its own), or a generation (flags: how it
 * ended as far as the guest knows; serial: its context's). */
typedef struct { int32_t handle; int flags; uint32_t serial; } held;
typedef struct { held item[POOL]; int n; } pool;
enum { ECHO = 1, EMBEDDING = 2, CANCELLED = 4, SUPERSEDED = 8, SEEN_END = 16, CONFIGURED = 32 };
static pool nn_graphs, nn_contexts, llm_graphs, llm_contexts, generations;
static uint32_t serials;

typedef struct {
    wnn_handle handle;
    uint32_t dims[6];
    size_t rank;
    int32_t type;
    uint8_t data[48];
    size_t len;
    int matches; /* its data is the size its type and dims say */
} tensor;
static tensor tensors[POOL];
static int n_tensors;

static held *pick(pool *p) { return p->n ? &p->item[rnd((uint32_t)p->n)] : NULL; }
static void forget(pool *p, held *h) { *h = p->item[--p->n]; }
static void keep(pool *p, int32_t handle, int flags, uint32_t serial, void (*drop)(int32_t))
{
    if (p->n == POOL) { /* full: let one go */
        held *old = pick(p);
        drop(old->handle);
        forget(p, old);
    }
    p->item[p->n++] = (held){handle, flags, serial ? serial : ++serials};
}
static int context_alive(uint32_t serial)
{
    for (int i = 0; i < llm_contexts.n; i++)
        if (llm_contexts.item[i].serial == serial)
            return 1;
    return 0;
}
static void supersede(uint32_t context) /* a new input ends the context's generation under way */
{
    for (int i = 0; i < generations.n; i++)
        if (generations.item[i].serial == context)
            generations.item[i].flags |= SUPERSEDED;
}

/* ---- hostile values -------------------------------------------------------------------------- */

#define S(literal) {literal, sizeof literal - 1} /* an llm_string, embedded NULs and all */
static const char *text_model;
static const llm_string NAMES[] = {S("nope"), S(""), S("Default"), S("../default"), S("echo\0x"),
                                   S("tiny"), S("default"), S("echo ")};
static llm_string model_name(void) /* mostly a registered model, else one that may not be */
{
    if (rnd(3))
        return rnd(2) ? (llm_string){"echo", 4} : (llm_string){(char *)text_model, strlen(text_model)};
    return PICK(NAMES);
}
static int known(llm_string name)
{
    return name.len == strlen(name.ptr) && (!strcmp(name.ptr, "echo") || !strcmp(name.ptr, text_model));
}
static int is_echo(llm_string name) { return name.len == 4 && !memcmp(name.ptr, "echo", 4); }

static const llm_string PROMPTS[] = {S("Once upon a time"), S(""), S("h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac"),
                                     S("a\0b"), S("\n"), S("User:")};
static char long_prompt[2400]; /* far past a 128-token context */
static llm_string prompt(void) { return rnd(12) ? PICK(PROMPTS) : (llm_string){long_prompt, sizeof long_prompt - 1}; }

/* Configs as JSON; `malformed`: not a JSON object in UTF-8 (invalid-encoding). */
static const struct { const char *json; int malformed; } CONFIGS[] = {
    {"{\"n-predict\": 2}", 0}, {"{\"temp\": 0, \"n-predict\": 1}", 0}, {"{", 1}, {"[]", 1}, {"null", 1},
    {"\xff\xfe", 1}, {"{\"n-predict\": }", 1}, {"{\"nope\": 1}", 0}, {"{\"temp\": \"hot\"}", 0},
    {"{\"n-predict\": 1e300}", 0}, {"{\"temp\": NaN}", 0}, {"{\"top-k\": -5}", 0},
    {"{\"n-predict\": 99999999999999999999999}", 0}, {"{\"seed\": 1.5}", 0}, {"{\"reverse-prompt\": [1]}", 0},
    {"{\"grammar\": null}", 0}, {"{\"grammar\": \"root ::= [a-z]+\", \"n-predict\": 2}", 0},
    {"{\"json-schema\": \"{\\\"type\\\": \\\"nope\\\"}\"}", 0}, {"{\"threads\": 100000}", 0}, {"{\"ctx-size\": 64}", 0},
    {"{\"embedding\": true}", 0}, {"{\"n_predict\": 1}", 0}};

static const llm_string PARAMETERS[] = {
    S("n-predict"), S("temp"), S("top-p"), S("top-k"), S("min-p"), S("repeat-penalty"), S("seed"),
    S("reverse-prompt"), S("grammar"), S("json-schema"), S("enable-log"), S("ctx-size"),
    S("batch-size"), S("threads"), S("embedding"), S("mirostat"), S("n_predict"), S("ngl"),
    S("typ-p"), S("last-n-penalty"), S("dry-allowed-length"), S("min-keep"),
    /* not options: */ S("nope"), S(""), S("TEMP"), S("n-predict\0x")};
enum { N_OPTIONS = 22 };

static int named(llm_string s, const char *name) { return s.len == strlen(name) && !memcmp(s.ptr, name, s.len); }

static fz_value random_value(llm_string name)
{
    static const char *const TEXTS[] = {"", "hot", "root ::= [a-z]+", "root ::= (", "{\"type\": \"string\"}", "\n"};
    static const int64_t INTEGERS[] = {0, 1, 2, 3, -1, -7, 64, 128, 4294967295LL, 1LL << 40, INT64_MAX, INT64_MIN};
    static const double NUMBERS[] = {0.0, 0.5, 1.0, 2.5, -1.0, 1e308, NAN, INFINITY, -INFINITY};
    fz_value v = {.kind = (uint8_t)rnd(4)};
    switch (v.kind) {
    case LLM_VALUE_BOOLEAN: v.of.boolean = (uint8_t)rnd(2); break;
    case LLM_VALUE_INTEGER:
        v.of.integer = PICK(INTEGERS);
        /* Values that make a context huge or a generation long are rare: they cost time, not coverage. */
        if ((named(name, "n-predict") || named(name, "n_predict")) && rnd(20))
            v.of.integer = rnd(4);
        if (named(name, "ctx-size") && (v.of.integer == 0 || v.of.integer == 4294967295LL))
            v.of.integer = 64;
        /* More threads than cores only thrash; a new n-gpu-layers reloads the weights. */
        if ((named(name, "threads") && v.of.integer > 2 && v.of.integer < 1000) || (named(name, "ngl") && rnd(8)))
            v.of.integer = -v.of.integer;
        break;
    case LLM_VALUE_NUMBER: v.of.number = PICK(NUMBERS); break;
    default: v.of.text = (llm_string){(char *)PICK(TEXTS), 0}; v.of.text.len = strlen(v.of.text.ptr);
    }
    return v;
}

static void random_tensor(tensor *t)
{
    static const uint32_t SIZES[] = {1, 2, 3, 4, 0, 7, 0xFFFFFFFFu, 0x10000};
    static const uint64_t ELEMENT[] = {2, 4, 8, 2, 1, 4, 8};
    static const size_t RANKS[] = {0, 1, 1, 2, 3, 6};
    t->type = (int32_t)rnd(7);
    t->rank = PICK(RANKS);
    uint64_t elements = 1, cap = 1ull << 40; /* saturating: huge is huge */
    for (size_t i = 0; i < t->rank; i++) {
        uint32_t d = t->dims[i] = rnd(4) ? 1 + rnd(3) : PICK(SIZES);
        elements = d && elements > cap / d ? cap : elements * d;
    }
    uint64_t want = elements * ELEMENT[t->type];
    t->len = rnd(4) && want <= sizeof t->data ? (size_t)want : rnd(sizeof t->data + 1);
    t->matches = t->len == want;
    for (size_t i = 0; i < t->len; i++)
        t->data[i] = (uint8_t)rnd(256);
    t->handle = wnn_tensor_new(t->dims, t->rank, t->type, t->data, t->len);
}

static void text_tensor(tensor *t, const char *text, size_t len)
{
    len = len < sizeof t->data ? len : sizeof t->data;
    *t = (tensor){.rank = 1, .type = WNN_U8, .len = len, .matches = 1, .dims = {(uint32_t)len}};
    memcpy(t->data, text, len);
    t->handle = wnn_tensor_new(t->dims, 1, WNN_U8, t->data, len);
}

static wnn_list builders[3];
static size_t random_builders(void) /* model bytes: noise, half of it behind GGUF's magic */
{
    static uint8_t bytes[3][40];
    size_t n = rnd(4);
    for (size_t i = 0; i < n; i++) {
        size_t len = rnd(sizeof bytes[i]);
        for (size_t k = 0; k < len; k++)
            bytes[i][k] = (uint8_t)rnd(256);
        if (rnd(2) && len >= 4)
            memcpy(bytes[i], "GGUF", 4);
        builders[i] = (wnn_list){bytes[i], len};
    }
    return n;
}

/* ---- wasi:nn ------------------------------------------------------------------------------------ */

static void nn_tensor_read(void)
{
    tensor *t = &tensors[rnd((uint32_t)n_tensors)];
    wnn_list dims, data;
    wnn_tensor_dimensions(t->handle, &dims);
    wnn_tensor_data(t->handle, &data);
    int same = wnn_tensor_ty(t->handle) == t->type && dims.len == t->rank && data.len == t->len &&
               !memcmp(dims.ptr, t->dims, t->rank * 4) && !memcmp(data.ptr, t->data, t->len);
    outcome(op_nn_tensor_read, OK, -1, NULL);
    if (!same)
        wrong(op_nn_tensor_read, "a tensor's type, dims or data came back changed", OK);
    free(dims.ptr);
    free(data.ptr);
}

static void nn_compute(held *context)
{
    static const char *const INPUTS[] = {"prompt", "config", "x", "prompt"}; /* the last a name twice */
    int echo = context->flags & ECHO;
    wnn_named_tensor inputs[4];
    tensor sent[4];
    size_t n = rnd(5);
    int all_match = 1;
    for (size_t i = 0; i < n; i++) {
        if (n_tensors && rnd(2)) { /* one made earlier */
            int k = (int)rnd((uint32_t)n_tensors);
            sent[i] = tensors[k];
            tensors[k] = tensors[--n_tensors];
        } else if (!echo && rnd(3)) { /* the text convention: a U8 prompt, a U8 JSON config */
            llm_string text = prompt();
            if (i)
                text.ptr = (char *)CONFIGS[rnd(sizeof CONFIGS / sizeof CONFIGS[0])].json, text.len = strlen(text.ptr);
            text_tensor(&sent[i], text.ptr, text.len);
        } else {
            random_tensor(&sent[i]);
        }
        all_match &= sent[i].matches;
        inputs[i] = (wnn_named_tensor){INPUTS[i], strlen(INPUTS[i]), sent[i].handle}; /* each the host's now */
    }
    wnn_result_list r;
    wnn_import_compute(context->handle, inputs, n, &r);
    if (r.is_err) {
        int got = nn_outcome(r.of.err);
        outcome(op_nn_compute, got, (echo && !all_match) || n == 4 ? NN + WNN_INVALID_ARGUMENT : -1,
                "a tensor whose data does not match its type and dims, or a name twice, is invalid-argument");
        if (echo && all_match && n < 4)
            wrong(op_nn_compute, "the echo model refused tensors that match their type and dims", got);
        return;
    }
    outcome(op_nn_compute, OK, -1, NULL);
    if (n == 4)
        wrong(op_nn_compute, "compute took two tensors of one name", OK);
    if (echo && !all_match)
        wrong(op_nn_compute, "the echo model took a tensor whose data does not match its type and dims", OK);
    wnn_named_tensor *outputs = r.of.ok.ptr;
    for (size_t i = 0; i < r.of.ok.len; i++) {
        for (size_t k = 0; echo && k < n; k++) { /* each input back under its name */
            if (outputs[i].name_len != inputs[k].name_len ||
                memcmp(outputs[i].name, inputs[k].name, inputs[k].name_len))
                continue;
            wnn_list data;
            wnn_tensor_data(outputs[i].tensor, &data);
            if (data.len != sent[k].len || memcmp(data.ptr, sent[k].data, sent[k].len))
                wrong(op_nn_compute, "the echo model changed a tensor", OK);
            free(data.ptr);
        }
        free((void *)outputs[i].name);
        wnn_tensor_drop(outputs[i].tensor);
    }
    free(outputs);
}

static void nn_call(uint32_t which)
{
    wnn_result_handle r;
    if (which == 0) {
        llm_string name = model_name();
        wnn_import_load_by_name(name.ptr, name.len, &r);
        outcome(op_nn_load_by_name, r.is_err ? nn_outcome(r.handle) : OK, known(name) ? OK : NN + WNN_NOT_FOUND,
                "a registered model loads, any other name is not-found");
        if (!r.is_err)
            keep(&nn_graphs, r.handle, is_echo(name) ? ECHO : 0, 0, wnn_graph_drop);
    } else if (which == 1) {
        size_t n = random_builders();
        fz_nn_load(builders, n, (int32_t)rnd(7), (int32_t)rnd(3), &r);
        outcome(op_nn_load, r.is_err ? nn_outcome(r.handle) : OK, -1, NULL);
        if (!r.is_err)
            keep(&nn_graphs, r.handle, 0, 0, wnn_graph_drop);
    } else if (which == 2 && nn_graphs.n) {
        held *graph = pick(&nn_graphs);
        wnn_import_init_execution_context(graph->handle, &r);
        outcome(op_nn_init, r.is_err ? nn_outcome(r.handle) : OK, OK, "a context on a loaded graph");
        if (!r.is_err)
            keep(&nn_contexts, r.handle, graph->flags, 0, wnn_context_drop);
    } else if (which == 3 && n_tensors < POOL) {
        random_tensor(&tensors[n_tensors++]);
        outcome(op_nn_tensor, OK, -1, NULL);
    } else if (which == 4 && n_tensors) {
        nn_tensor_read();
    } else if (which == 5 && nn_contexts.n) {
        nn_compute(pick(&nn_contexts));
    } else if (which == 6) {
        pool *p = rnd(2) ? &nn_graphs : &nn_contexts;
        held *h = pick(p);
        if (h) {
            (p == &nn_graphs ? wnn_graph_drop : wnn_context_drop)(h->handle);
            forget(p, h);
        } else if (n_tensors) {
            wnn_tensor_drop(tensors[--n_tensors].handle);
        }
        outcome(op_nn_drop, OK, -1, NULL);
    }
}

/* ---- wasinn:llm backends and graphs -------------------------------------------------------------- */

static void free_strings(wnn_list *list, size_t per_element)
{
    llm_string *s = list->ptr;
    for (size_t i = 0; i < per_element * list->len; i++)
        free(s[i].ptr);
    free(s);
}

static void graph_properties(held *graph)
{
    wnn_list all;
    fz_list_properties(graph->handle, &all);
    llm_string *kv = all.ptr, key = {"nope", 4};
    int is_known = all.len && rnd(2);
    if (is_known)
        key = kv[2 * rnd((uint32_t)all.len)];
    llm_option_string value;
    fz_get_property(graph->handle, key.ptr, key.len, &value);
    outcome(op_properties, OK, -1, NULL);
    if (value.is_some != is_known)
        wrong(op_properties, "get-property disagrees with list-properties", OK);
    if (value.is_some)
        free(value.value.ptr);
    llm_result_unit set;
    fz_set_property(graph->handle, key.ptr, key.len, "x", 1, &set);
    int got = set.is_err ? llm_outcome(op_set_property, &set.of.err, key.ptr, key.len) : OK;
    outcome(op_set_property, got, is_known ? LLM + LLM_UNSUPPORTED_OPERATION : LLM + LLM_INVALID_PARAMETER,
            "a property is read-only (unsupported-operation), an unknown key invalid-parameter");
    free_strings(&all, 2);
}

static void llm_graph_call(uint32_t which)
{
    llm_result_handle r;
    held *graph = pick(&llm_graphs);
    if (which == 0) {
        wnn_list names;
        fz_list_backends(&names);
        free_strings(&names, 1);
        outcome(op_backends, OK, -1, NULL);
    } else if (which == 1) {
        static const char *const BACKENDS[] = {"ggml", "echo", "nope", "", "GGML"};
        const char *name = PICK(BACKENDS);
        fz_result_list p;
        fz_backend_properties(name, strlen(name), &p);
        int got = p.is_err ? llm_outcome(op_backend_properties, &p.of.err, name, strlen(name)) : OK;
        outcome(op_backend_properties, got, !strcmp(name, "ggml") || !strcmp(name, "echo") ? OK : LLM + LLM_NOT_FOUND,
                "a backend the host has, else not-found");
        if (!p.is_err)
            free_strings(&p.of.ok, 2);
    } else if (which == 2) {
        llm_string name = model_name();
        llm_import_load_by_name(name.ptr, name.len, &r);
        int got = r.is_err ? llm_outcome(op_load_by_name, &r.of.err, name.ptr, name.len) : OK;
        outcome(op_load_by_name, got, known(name) ? OK : LLM + LLM_NOT_FOUND,
                "a registered model loads, any other name is not-found");
        if (!r.is_err)
            keep(&llm_graphs, r.of.ok, is_echo(name) ? ECHO : 0, 0, llm_graph_drop);
    } else if (which == 3 && graph) {
        graph_properties(graph);
    } else if (which == 4 && graph) {
        llm_import_graph_init_context(graph->handle, &r);
        int got = r.is_err ? llm_outcome(op_init_context, &r.of.err, NULL, 0) : OK;
        /* A config given at load is checked against the model when a context is made. */
        outcome(op_init_context, got, graph->flags & ECHO ? LLM + LLM_UNSUPPORTED_OPERATION : graph->flags & CONFIGURED ? -1 : OK,
                "a context on a text model; the echo model has no text (unsupported-operation)");
        if (!r.is_err)
            keep(&llm_contexts, r.of.ok, 0, 0, llm_context_drop);
    } else if (which == 5 && graph) {
        llm_graph_drop(graph->handle);
        forget(&llm_graphs, graph);
        outcome(op_drop, OK, -1, NULL);
    }
}

/* ---- wasinn:llm contexts and generations ---------------------------------------------------------- */

static void parameters(held *context)
{
    wnn_list all;
    fz_list_parameters(context->handle, &all);
    fz_parameter *p = all.ptr;
    for (size_t i = 0; i < all.len; i++) {
        free(p[i].name.ptr);
        if (p[i].value.kind == LLM_VALUE_TEXT)
            free(p[i].value.of.text.ptr);
    }
    free(p);
    size_t i = rnd(sizeof PARAMETERS / sizeof PARAMETERS[0]);
    fz_option_value value;
    fz_get_parameter(context->handle, PARAMETERS[i].ptr, PARAMETERS[i].len, &value);
    outcome(op_parameters, OK, -1, NULL);
    if (value.is_some && value.value.kind == LLM_VALUE_TEXT)
        free(value.value.of.text.ptr);
    if (value.is_some != (i < N_OPTIONS))
        wrong(op_parameters, "get-parameter: a value for each option, none for any other name", OK);
}

static void set_parameter(held *context)
{
    size_t i = rnd(sizeof PARAMETERS / sizeof PARAMETERS[0]);
    llm_string name = PARAMETERS[i];
    fz_value v = random_value(name);
    int64_t payload = v.kind == LLM_VALUE_TEXT      ? (int64_t)(uintptr_t)v.of.text.ptr
                      : v.kind == LLM_VALUE_BOOLEAN ? v.of.boolean
                                                    : v.of.integer; /* an f64's bits too */
    llm_result_unit r;
    llm_import_context_set_parameter(context->handle, name.ptr, name.len, v.kind, payload,
                                     v.kind == LLM_VALUE_TEXT ? (int32_t)v.of.text.len : 0, &r);
    int got = r.is_err ? llm_outcome(op_set_parameter, &r.of.err, name.ptr, name.len) : OK;
    int not_finite = v.kind == LLM_VALUE_NUMBER && !isfinite(v.of.number);
    outcome(op_set_parameter, got, i >= N_OPTIONS || not_finite ? LLM + LLM_INVALID_PARAMETER : -1,
            "an unknown parameter, or a number that is not finite, is invalid-parameter");
    if (!r.is_err && named(name, "embedding"))
        context->flags = (context->flags & ~EMBEDDING) | (v.of.boolean ? EMBEDDING : 0);
}

static void context_call(uint32_t which, held *context)
{
    llm_string text = prompt();
    if (which == 0) {
        parameters(context);
    } else if (which == 1) {
        set_parameter(context);
    } else if (which == 2) {
        supersede(context->serial);
        llm_result_string r;
        llm_import_context_compute(context->handle, text.ptr, text.len, &r);
        outcome(op_compute, r.is_err ? llm_outcome(op_compute, &r.of.err, NULL, 0) : OK, -1, NULL);
        if (!r.is_err)
            free(r.of.ok.ptr);
    } else if (which == 3) {
        supersede(context->serial);
        llm_result_handle r;
        llm_import_context_generate(context->handle, text.ptr, text.len, &r);
        outcome(op_generate, r.is_err ? llm_outcome(op_generate, &r.of.err, NULL, 0) : OK, -1, NULL);
        if (!r.is_err)
            keep(&generations, r.of.ok, 0, context->serial, llm_generation_drop);
    } else if (which == 4) {
        size_t k = rnd(sizeof CONFIGS / sizeof CONFIGS[0]);
        fz_result_kind r;
        fz_p1_configure(context->handle, CONFIGS[k].json, strlen(CONFIGS[k].json), &r);
        outcome(op_p1_configure, r.is_err ? P1 + r.err : OK, CONFIGS[k].malformed ? P1 + 1 : -1,
                "a config that is not a JSON object is invalid-encoding");
    } else if (which == 5) {
        supersede(context->serial);
        fz_result_kind_string r;
        fz_p1_embed(context->handle, text.ptr, text.len, &r);
        outcome(op_p1_embed, r.is_err ? P1 + r.of.err : OK, -1, NULL);
        if (!r.is_err)
            free(r.of.ok.ptr);
    } else {
        llm_context_drop(context->handle);
        forget(&llm_contexts, context);
        outcome(op_drop, OK, -1, NULL);
    }
}

static void generation_call(uint32_t which, held *g)
{
    int over = g->flags & (CANCELLED | SUPERSEDED | SEEN_END) || !context_alive(g->serial);
    if (which == 0) {
        llm_result_chunk r;
        llm_import_generation_next_chunk(g->handle, &r);
        int got = r.is_err ? llm_outcome(op_next_chunk, &r.of.err, NULL, 0) : OK;
        int some = !r.is_err && r.of.ok.is_some;
        outcome(op_next_chunk, got, -1, NULL);
        if (over && got != OK)
            wrong(op_next_chunk, "an error from a generation that is over", got);
        if (over && some)
            wrong(op_next_chunk, "a chunk after cancel, a newer input or its context's drop", got);
        if (some)
            free(r.of.ok.value.ptr);
        else
            g->flags |= SEEN_END;
    } else if (which == 1) {
        llm_generation_cancel(g->handle);
        outcome(op_cancel, OK, -1, NULL);
        llm_usage usage = llm_generation_usage(g->handle);
        if (!(g->flags & SEEN_END) && !(usage.has_finish && usage.finish == LLM_FINISH_CANCELLED))
            wrong(op_cancel, "a generation ended before the guest saw its end does not say cancelled", OK);
        g->flags |= CANCELLED;
    } else if (which == 2) {
        llm_usage usage = llm_generation_usage(g->handle);
        outcome(op_usage, OK, -1, NULL);
        if (over && !(g->flags & SEEN_END) && !(usage.has_finish && usage.finish == LLM_FINISH_CANCELLED))
            wrong(op_usage, "a generation cut short does not say cancelled", OK);
    } else {
        llm_generation_drop(g->handle);
        forget(&generations, g);
        outcome(op_drop, OK, -1, NULL);
    }
}

/* ---- wasinn:llm/preview1 --------------------------------------------------------------------------- */

static void p1_call(uint32_t which)
{
    fz_result_loaded r;
    int flags = 0;
    if (which == 0) {
        llm_string name = model_name();
        size_t k = rnd(sizeof CONFIGS / sizeof CONFIGS[0]);
        int has_config = (int)rnd(2);
        flags = has_config ? CONFIGURED : 0;
        fz_p1_load_by_name(name.ptr, name.len, has_config, CONFIGS[k].json, strlen(CONFIGS[k].json), &r);
        outcome(op_p1_load_by_name, r.is_err ? P1 + r.of.err : OK,
                has_config && CONFIGS[k].malformed ? P1 + 1 : known(name) ? -1 : P1 + 6,
                "a config that is not a JSON object is invalid-encoding, else an unregistered model not-found");
    } else if (which == 1) {
        size_t n = random_builders();
        fz_p1_load(builders, n, (int32_t)rnd(7), (int32_t)rnd(3), &r);
        outcome(op_p1_load, r.is_err ? P1 + r.of.err : OK, -1, NULL);
    } else {
        held *graph = pick(&llm_graphs);
        if (!graph)
            return;
        fz_result_kind u;
        fz_p1_unload(graph->handle, &u); /* the graph is the host's now */
        forget(&llm_graphs, graph);
        outcome(op_p1_unload, u.is_err ? P1 + u.err : OK, OK, "a loaded graph unloads");
        return;
    }
    if (!r.is_err) {
        free(r.of.ok.build.ptr);
        keep(&llm_graphs, r.of.ok.graph, flags | (r.of.ok.text ? 0 : ECHO), 0, llm_graph_drop);
    }
}

/* ---- deliberate traps ------------------------------------------------------------------------- */

static void trap(const char *name)
{
    static const char *const KINDS[] = {"dropped-handle", "foreign-handle", "double-drop", "invalid-utf8",
                                        "string-out-of-bounds", "unknown-enum-case", "hostile-realloc"};
    uint32_t kind = 0;
    while (kind < sizeof KINDS / sizeof KINDS[0] && strcmp(name, KINDS[kind]))
        kind++;
    report();
    fprintf(stderr, "fuzz: trap %s\n", name);
    fflush(stderr);
    llm_result_handle r;
    llm_handle graph = llm_graphs.n ? llm_graphs.item[--llm_graphs.n].handle : llm_load_by_name("echo");
    wnn_list names;
    switch (kind) {
    case 0: llm_graph_drop(graph); llm_import_graph_init_context(graph, &r); break;
    case 1: llm_import_graph_init_context(wnn_tensor_new(NULL, 0, WNN_U8, NULL, 0), &r); break;
    case 2: llm_graph_drop(graph); llm_graph_drop(graph); break;
    case 3: llm_import_load_by_name("\xff\xfe", 2, &r); break;
    case 4: llm_import_load_by_name((const char *)(uintptr_t)0xFFFFFF00u, 64, &r); break;
    case 5: wnn_tensor_new(NULL, 0, 200, NULL, 0); break;
    case 6: hostile_realloc = 1; fz_list_backends(&names); break;
    default: fputs("fuzz: wrong trap: no such kind\n", stderr); return;
    }
    hostile_realloc = 0;
    fputs("fuzz: wrong trap: the canonical ABI let it through\n", stderr);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fputs("usage: fuzz_wit SEED CALLS TEXT_MODEL [TRAP|none [TEXT_SHARE]]\n", stderr);
        return 1;
    }
    rng_state = strtoull(argv[1], NULL, 10);
    long calls = strtol(argv[2], NULL, 10);
    text_model = argv[3];
    uint32_t text_share = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 40;
    for (size_t i = 0; i < sizeof long_prompt - 1; i++)
        long_prompt[i] = i % 2 ? ' ' : 'a';
    /* Generating is what costs: whole answers (compute; embed on a context that generates) are rare. */
    static const uint32_t CONTEXT_OPS[] = {0, 0, 1, 1, 1, 1, 3, 3, 3, 4, 4, 6, 6, 2, 5};
    static const uint32_t GENERATION_OPS[] = {0, 0, 0, 1, 1, 2, 3};
    static const uint32_t P1_OPS[] = {0, 0, 0, 0, 0, 1, 1, 2}; /* an unload makes the next load read the weights again */
    for (long call = 0; call < calls; call++) {
        uint32_t area = rnd(100);
        held *context = pick(&llm_contexts), *g = pick(&generations);
        if (area < text_share / 2 && context)
            context_call(PICK(CONTEXT_OPS), context);
        else if (area < text_share && g)
            generation_call(PICK(GENERATION_OPS), g);
        else if (area < text_share + (100 - text_share) / 2)
            nn_call(rnd(7));
        else if (area < 92)
            llm_graph_call(rnd(6));
        else
            p1_call(PICK(P1_OPS));
    }
    if (argc > 4 && strcmp(argv[4], "none"))
        trap(argv[4]);
    /* Everything let go, so that the host's tables are empty before the guest ends. */
    while (generations.n)
        llm_generation_drop(generations.item[--generations.n].handle);
    while (llm_contexts.n)
        llm_context_drop(llm_contexts.item[--llm_contexts.n].handle);
    while (llm_graphs.n)
        llm_graph_drop(llm_graphs.item[--llm_graphs.n].handle);
    while (nn_contexts.n)
        wnn_context_drop(nn_contexts.item[--nn_contexts.n].handle);
    while (nn_graphs.n)
        wnn_graph_drop(nn_graphs.item[--nn_graphs.n].handle);
    while (n_tensors)
        wnn_tensor_drop(tensors[--n_tensors].handle);
    report();
    return 0;
}
