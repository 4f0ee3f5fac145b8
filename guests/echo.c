/* Tensor round-trip conformance against the host's echo backend: every tensor type
 * and shape goes in through set_input and must come back byte for byte. */
#include "wasi_nn.h"

#define N_TYPES 6
#define N_SHAPES 5
#define N_INDICES 3
#define MAX_BYTES (2 * 3 * 4 * 8)

static const char *const type_names[N_TYPES] = {"f16", "f32", "f64", "u8", "i32", "i64"};
static const uint32_t type_sizes[N_TYPES] = {2, 4, 8, 1, 4, 8};

static const struct {
    uint32_t len, dims[4];
} shapes[N_SHAPES] = {
    {1, {1}}, {1, {7}}, {2, {2, 3}}, {3, {2, 3, 4}}, {4, {1, 1, 1, 5}},
};

typedef struct {
    int type, shape;
    uint32_t len;
    uint8_t data[MAX_BYTES];
} sample;

static void describe(const sample *s, char *out, size_t cap)
{
    int n = snprintf(out, cap, "type=%s dims=", type_names[s->type]);
    for (uint32_t d = 0; d < shapes[s->shape].len; d++)
        n += snprintf(out + n, cap - (size_t)n, d ? "x%u" : "%u",
                      (unsigned)shapes[s->shape].dims[d]);
    snprintf(out + n, cap - (size_t)n, " bytes=%u", (unsigned)s->len);
}

static void fail(const sample *s, uint32_t index, const char *what)
{
    char desc[64];
    describe(s, desc, sizeof desc);
    printf("FAIL %s index=%u: %s\n", desc, (unsigned)index, what);
    exit(3);
}

static void make_sample(sample *s, int type, int shape)
{
    s->type = type;
    s->shape = shape;
    s->len = type_sizes[type];
    for (uint32_t d = 0; d < shapes[shape].len; d++)
        s->len *= shapes[shape].dims[d];
    for (uint32_t i = 0; i < s->len; i++)
        s->data[i] = (uint8_t)((i * 31 + (uint32_t)type * 7 + (uint32_t)shape) & 0xff);
}

static void check_output(graph_execution_context ctx, uint32_t index, const sample *s)
{
    /* Sentinel-filled, with a spare byte, so any write the host should not make shows. */
    uint8_t out[MAX_BYTES + 1];
    uint32_t written = 0;
    char what[96];

    memset(out, 0xa5, sizeof out);
    int32_t err = wasi_nn_get_output(ctx, index, out, s->len - 1, &written);
    if (err != NN_ERRNO_TOO_LARGE) {
        snprintf(what, sizeof what, "buffer one byte short gave errno %d (%s), want 7",
                 (int)err, nn_errno_name(err));
        fail(s, index, what);
    }
    if (written != s->len) {
        snprintf(what, sizeof what, "too-large reported %u bytes needed, want %u",
                 (unsigned)written, (unsigned)s->len);
        fail(s, index, what);
    }
    for (uint32_t i = 0; i < sizeof out; i++)
        if (out[i] != 0xa5)
            fail(s, index, "too-large wrote data into the buffer");

    written = 0;
    nn_check(wasi_nn_get_output(ctx, index, out, s->len, &written), "get_output");
    if (written != s->len) {
        snprintf(what, sizeof what, "got %u bytes, sent %u", (unsigned)written,
                 (unsigned)s->len);
        fail(s, index, what);
    }
    if (out[s->len] != 0xa5)
        fail(s, index, "get_output wrote past out_buf_max");
    for (uint32_t i = 0; i < s->len; i++)
        if (out[i] != s->data[i]) {
            snprintf(what, sizeof what,
                     "first differing byte at offset %u (sent 0x%02x, got 0x%02x)",
                     (unsigned)i, s->data[i], out[i]);
            fail(s, index, what);
        }
}

int main(int argc, char **argv)
{
    const char *model = nn_model_arg(argc, argv, 1, "echo MODEL  (the host's echo backend)");
    int cases = 0;
    graph g;

    nn_load(model, &g);
    for (int type = 0; type < N_TYPES; type++)
        for (int shape = 0; shape < N_SHAPES; shape++) {
            /* Index j carries the type and shape j steps further on, so each compute
             * mixes three tensors and every combination visits every index. */
            sample samples[N_INDICES];
            graph_execution_context ctx;
            char desc[64];

            nn_check(wasi_nn_init_execution_context(g, &ctx), "init_execution_context");
            for (uint32_t j = 0; j < N_INDICES; j++) {
                sample *s = &samples[j];
                make_sample(s, (type + (int)j) % N_TYPES, (shape + (int)j) % N_SHAPES);
                nn_tensor t = {
                    .dims = shapes[s->shape].dims,
                    .dims_len = shapes[s->shape].len,
                    .type = (uint8_t)s->type,
                    .data = s->data,
                    .data_len = s->len,
                };
                nn_check(wasi_nn_set_input(ctx, j, &t), "set_input");
            }
            nn_check(wasi_nn_compute(ctx), "compute");
            for (uint32_t j = 0; j < N_INDICES; j++)
                check_output(ctx, j, &samples[j]);
            nn_check(wasi_nn_finalize_execution_context(ctx), "finalize_execution_context");

            describe(&samples[0], desc, sizeof desc);
            printf("ok %s\n", desc);
            cases++;
        }
    printf("echo: %d cases passed\n", cases);
    return 0;
}
