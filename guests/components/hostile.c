// world: host-imports
/* A component that misbehaves on purpose, for the host's tests: what a careless or
 * hostile guest does must not leak, crash or confuse the host.
 *
 *   hostile never-drops MODEL   opens a graph, a context, a generation and tensors, pulls a
 *                               chunk, and exits holding all of them
 *   hostile traps MODEL         traps in the middle of a generation
 *   hostile after-cancel MODEL  cancels a generation, then keeps pulling: none, none
 *   hostile bad-tensor          sends the echo model a tensor whose data does not match its
 *                               dims: invalid-argument
 *   hostile bad-parameter MODEL sets temp to a string: invalid-parameter naming temp
 *   hostile finishes MODEL      ends three generations three ways and prints each finish:
 *                               n-predict (raised mid-generation, which applies to the next
 *                               one only): length; the reverse prompt: stop; cancel: cancelled
 *   hostile spins               loops without end in wasm (only the host's limits stop it)
 *   hostile twice               sends the echo model two tensors of one name: invalid-argument
 *   hostile embedding-text MODEL asks a context made for embeddings for text (compute):
 *                               unsupported-operation
 *
 * Exit status: 0 when the host answered as it should (printed on stdout), 1 otherwise. */
#include "wasinn_llm.h"
#include "wasi_nn_wit.h"

static int never_drops(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_handle generation = llm_context_generate(context, "Once upon a time", 16);
    size_t len;
    free(llm_generation_next_chunk(generation, &len));
    static const uint32_t dims[1] = {4};
    for (int i = 0; i < 3; i++)
        wnn_tensor_new(dims, 1, WNN_U8, "abcd", 4);
    wnn_init_execution_context(wnn_load_by_name("echo"));
    puts("holding a graph, a context, a generation, tensors and an echo context");
    return 0;
}

static int traps(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_handle generation = llm_context_generate(context, "Once upon a time", 16);
    size_t len;
    for (int i = 0; i < 2; i++)
        free(llm_generation_next_chunk(generation, &len));
    puts("trapping mid-generation");
    fflush(stdout);
    __builtin_trap();
}

static int after_cancel(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_handle generation = llm_context_generate(context, "Once upon a time", 16);
    size_t len;
    char *first = llm_generation_next_chunk(generation, &len);
    llm_generation_cancel(generation);
    char *second = llm_generation_next_chunk(generation, &len);
    char *third = llm_generation_next_chunk(generation, &len);
    llm_usage usage = llm_generation_usage(generation);
    int finished_cancelled = usage.has_finish && usage.finish == LLM_FINISH_CANCELLED;
    printf("first %s, after cancel: %s, %s; finish %s\n", first ? "a chunk" : "none", second ? "a chunk" : "none",
           third ? "a chunk" : "none", finished_cancelled ? "cancelled" : "not cancelled");
    /* The context stays usable: a new generation streams again. */
    llm_handle again = llm_context_generate(context, "And then", 8);
    char *fresh = llm_generation_next_chunk(again, &len);
    printf("a new generation: %s\n", fresh ? "a chunk" : "none");
    return first && !second && !third && finished_cancelled && fresh ? 0 : 1;
}

/* 0 when compute refuses the inputs with invalid-argument (printed), else 1 saying `taken`. */
static int refused(const wnn_named_tensor *inputs, size_t n, const char *taken)
{
    wnn_handle context = wnn_init_execution_context(wnn_load_by_name("echo"));
    wnn_result_list r;
    wnn_import_compute(context, inputs, n, &r);
    if (!r.is_err) {
        puts(taken);
        return 1;
    }
    wnn_list message;
    wnn_error_data(r.of.err, &message);
    int32_t code = wnn_error_code(r.of.err);
    printf("compute: %s: %.*s\n", wnn_error_code_name(code), (int)message.len, (const char *)message.ptr);
    return code == WNN_INVALID_ARGUMENT ? 0 : 1;
}

static int bad_tensor(void)
{
    static const uint32_t dims[1] = {3}; /* three f32 values announced, four bytes given */
    wnn_named_tensor input = {"bad", 3, wnn_tensor_new(dims, 1, WNN_FP32, "abcd", 4)};
    return refused(&input, 1, "compute took a tensor whose data does not match its dims");
}

static int twice(void)
{
    static const uint32_t dims[1] = {4};
    wnn_named_tensor inputs[2] = {{"x", 1, wnn_tensor_new(dims, 1, WNN_U8, "abcd", 4)},
                                  {"x", 1, wnn_tensor_new(dims, 1, WNN_FP32, "abcd", 4)}};
    return refused(inputs, 2, "compute took two tensors of one name");
}

static int bad_parameter(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_value hot = {.kind = LLM_VALUE_TEXT, .of.text = {"hot", 3}};
    llm_result_unit r;
    llm_import_context_set_parameter(context, "temp", 4, hot.kind, (int64_t)(uintptr_t)hot.of.text.ptr,
                                     (int32_t)hot.of.text.len, &r);
    if (!r.is_err) {
        puts("set-parameter took temp=\"hot\"");
        return 1;
    }
    printf("set-parameter: %s, name %.*s: %.*s\n", llm_error_code_name(r.of.err.code),
           r.of.err.name.is_some ? (int)r.of.err.name.value.len : 4,
           r.of.err.name.is_some ? (const char *)r.of.err.name.value.ptr : "none", (int)r.of.err.message.len,
           (const char *)r.of.err.message.ptr);
    return r.of.err.code == LLM_INVALID_PARAMETER && r.of.err.name.is_some ? 0 : 1;
}

static const char *finish_of(llm_handle generation)
{
    static const char *names[] = {"stop", "length", "cancelled", "error"};
    llm_usage usage = llm_generation_usage(generation);
    return usage.has_finish && usage.finish < 4 ? names[usage.finish] : "none";
}

static int finishes(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_context_set_parameter(context, "temp", (llm_value){.kind = LLM_VALUE_NUMBER, .of.number = 0.0});
    llm_context_set_parameter(context, "n-predict", (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = 4});
    llm_handle generation = llm_context_generate(context, "Once upon a time", 16);
    size_t len;
    char *chunk = llm_generation_next_chunk(generation, &len);
    llm_context_set_parameter(context, "n-predict", (llm_value){.kind = LLM_VALUE_INTEGER, .of.integer = 64});
    while (chunk) {
        free(chunk);
        chunk = llm_generation_next_chunk(generation, &len);
    }
    const char *limit = finish_of(generation);
    llm_context_set_parameter(context, "reverse-prompt", (llm_value){.kind = LLM_VALUE_TEXT, .of.text = {" ", 1}});
    llm_handle stopped = llm_context_generate(context, "Once upon a time", 16);
    while ((chunk = llm_generation_next_chunk(stopped, &len)))
        free(chunk);
    const char *reverse = finish_of(stopped);
    llm_handle cancelled = llm_context_generate(context, "Once upon a time", 16);
    free(llm_generation_next_chunk(cancelled, &len));
    llm_generation_cancel(cancelled);
    const char *cancel = finish_of(cancelled);
    printf("n-predict: %s; reverse prompt: %s; cancel: %s\n", limit, reverse, cancel);
    return !strcmp(limit, "length") && !strcmp(reverse, "stop") && !strcmp(cancel, "cancelled") ? 0 : 1;
}

static int embedding_text(const char *model)
{
    llm_handle context = llm_graph_init_context(llm_load_by_name(model));
    llm_context_set_parameter(context, "embedding", (llm_value){.kind = LLM_VALUE_BOOLEAN, .of.boolean = true});
    llm_result_string r;
    llm_import_context_compute(context, "Hello", 5, &r);
    if (!r.is_err) {
        puts("compute answered text on a context that makes embeddings");
        return 1;
    }
    printf("compute: %s: %.*s\n", llm_error_code_name(r.of.err.code), (int)r.of.err.message.len,
           r.of.err.message.ptr);
    return r.of.err.code == LLM_UNSUPPORTED_OPERATION ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *model = argc > 2 ? argv[2] : "default";
    if (!strcmp(mode, "never-drops"))
        return never_drops(model);
    if (!strcmp(mode, "traps"))
        return traps(model);
    if (!strcmp(mode, "after-cancel"))
        return after_cancel(model);
    if (!strcmp(mode, "bad-tensor"))
        return bad_tensor();
    if (!strcmp(mode, "bad-parameter"))
        return bad_parameter(model);
    if (!strcmp(mode, "finishes"))
        return finishes(model);
    if (!strcmp(mode, "twice"))
        return twice();
    if (!strcmp(mode, "embedding-text"))
        return embedding_text(model);
    if (!strcmp(mode, "spins"))
        for (volatile int spin = 1; spin;)
            ;
    fputs("usage: hostile never-drops|traps|after-cancel|bad-tensor|twice|bad-parameter|finishes|embedding-text|spins"
          " [MODEL]\n", stderr);
    return 1;
}
