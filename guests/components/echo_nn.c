// world: nn-imports
/* A tensor round trip on standard wasi:nn (the WIT ABI), for the host's echo backend:
 * three named tensors in, the outputs printed, and each checked against the input of
 * the same name (type, dimensions, bytes). Then a second compute on the same context
 * with one of them: a compute answers for its own inputs only, so exactly that one
 * must come back.
 *
 *     echo_nn MODEL [TEXT]     (tests pass MODEL=echo; TEXT defaults to "hello from C")
 *
 * Built by guests.py like stream_llm.c, on the world named on the first line; the
 * imports' glue is wasi_nn_wit.h. Exit status: 0 all came back, 1 usage, 2 a wasi:nn
 * error, 3 a difference. */
#include <inttypes.h>

#include "wasi_nn_wit.h"

enum { N_INPUTS = 3 };

typedef struct {
    const char *name;
    int32_t type;
    uint32_t dims[2];
    size_t n_dims;
    const void *data;
    size_t len;
} input;

static void print_values(int32_t type, const void *data, size_t len)
{
    if (type == WNN_FP32)
        for (size_t k = 0; k < len / 4; k++)
            printf(k ? " %g" : "%g", (double)((const float *)data)[k]);
    else if (type == WNN_I64)
        for (size_t k = 0; k < len / 8; k++)
            printf(k ? " %" PRId64 : "%" PRId64, ((const int64_t *)data)[k]);
    else
        printf("\"%.*s\"", (int)len, (const char *)data);
}

/* Why the output differs from the input, or NULL. */
static const char *difference(const input *in, int32_t type, const wnn_list *dims, const wnn_list *data)
{
    static char why[96];
    if (type != in->type)
        return "its type differs";
    if (dims->len != in->n_dims || memcmp(dims->ptr, in->dims, in->n_dims * sizeof(uint32_t)))
        return "its dimensions differ";
    if (data->len != in->len)
        return "its size differs";
    for (size_t i = 0; i < in->len; i++) {
        uint8_t sent = ((const uint8_t *)in->data)[i], got = ((const uint8_t *)data->ptr)[i];
        if (sent != got) {
            snprintf(why, sizeof why, "first differing byte at offset %zu (sent 0x%02x, got 0x%02x)", i, sent, got);
            return why;
        }
    }
    return NULL;
}

/* One compute on `inputs` (at most N_INPUTS): each output printed and checked; every input
 * must come back, and nothing else. Returns whether all did. */
static int round_trip(wnn_handle context, const input *inputs, size_t n)
{
    /* compute takes the input tensors (own): they are the host's from then on. */
    wnn_named_tensor named[N_INPUTS];
    for (size_t i = 0; i < n; i++)
        named[i] = (wnn_named_tensor){inputs[i].name, strlen(inputs[i].name),
                                      wnn_tensor_new(inputs[i].dims, inputs[i].n_dims, inputs[i].type, inputs[i].data,
                                                     inputs[i].len)};
    size_t n_outputs;
    wnn_named_tensor *outputs = wnn_compute(context, named, n, &n_outputs);

    int seen[N_INPUTS] = {0}, ok = 1;
    for (size_t i = 0; i < n_outputs; i++) {
        wnn_named_tensor *o = &outputs[i];
        wnn_list dims, data;
        wnn_tensor_dimensions(o->tensor, &dims);
        wnn_tensor_data(o->tensor, &data);
        int32_t type = wnn_tensor_ty(o->tensor);

        printf("%.*s: %s [", (int)o->name_len, o->name, wnn_tensor_type_name(type));
        for (size_t d = 0; d < dims.len; d++)
            printf(d ? ", %u" : "%u", (unsigned)((uint32_t *)dims.ptr)[d]);
        printf("] %zu bytes: ", data.len);
        print_values(type, data.ptr, data.len);
        printf("\n");

        int sent = 0;
        for (size_t k = 0; k < n; k++) {
            if (strlen(inputs[k].name) != o->name_len || memcmp(inputs[k].name, o->name, o->name_len))
                continue;
            const char *why = difference(&inputs[k], type, &dims, &data);
            seen[k] = sent = 1;
            if (why) {
                printf("FAIL %s: %s\n", inputs[k].name, why);
                ok = 0;
            }
        }
        if (!sent) {
            printf("FAIL %.*s: no input of this compute has that name\n", (int)o->name_len, o->name);
            ok = 0;
        }
        free(dims.ptr);
        free(data.ptr);
        free((void *)o->name);
        wnn_tensor_drop(o->tensor);
    }
    free(outputs);
    for (size_t k = 0; k < n; k++) {
        if (!seen[k]) {
            printf("FAIL %s: no output of that name\n", inputs[k].name);
            ok = 0;
        }
    }
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fputs("usage: echo_nn MODEL [TEXT]\n", stderr);
        return 1;
    }
    const char *text = argc == 3 ? argv[2] : "hello from C";
    static const float matrix[4] = {1.0f, -2.5f, 3.25f, 4.0f};
    static const int64_t ids[3] = {-1, 0, INT64_C(1) << 40};
    const input inputs[N_INPUTS] = {
        {"matrix", WNN_FP32, {2, 2}, 2, matrix, sizeof matrix},
        {"ids", WNN_I64, {3}, 1, ids, sizeof ids},
        {"text", WNN_U8, {(uint32_t)strlen(text)}, 1, text, strlen(text)},
    };

    wnn_handle graph = wnn_load_by_name(argv[1]);
    wnn_handle context = wnn_init_execution_context(graph);
    int ok = round_trip(context, inputs, N_INPUTS);
    ok = round_trip(context, &inputs[N_INPUTS - 1], 1) && ok;
    wnn_context_drop(context);
    wnn_graph_drop(graph);
    if (!ok) {
        fflush(stdout);
        return 3;
    }
    printf("echo_nn: %d tensors came back unchanged, then 1 alone\n", N_INPUTS);
    return 0;
}
