// world: model-provider
/* model: a provider that names the model and its default parameters. Composed with a
 * guest (`wasinn-lab compose GUEST.wasm --with model`), it answers the guest's
 * load-by-name, whatever name it asks for, with the host's model MODEL below, and gives
 * every context it makes the parameters in DEFAULTS before the guest sees it: the guest's
 * own set-parameter calls still override them. Copy this file, change the two, and build
 * it (`wasinn-lab guests build`, or guests.build(path)) to pin another model and its settings.
 *
 * It exports `graphs` only: the contexts are the host's, so the guest uses the host's
 * `prompt` directly (the composed component imports it).
 */
#include "llm_provider.h"

#define MODEL "default"

static const struct {
    const char *name;
    llm_value value;
} DEFAULTS[] = {
    {"n-predict", {.kind = LLM_VALUE_INTEGER, .of.integer = 48}},
    {"temp", {.kind = LLM_VALUE_NUMBER, .of.number = 0.7}},
    {"top-k", {.kind = LLM_VALUE_INTEGER, .of.integer = 40}},
    {"top-p", {.kind = LLM_VALUE_NUMBER, .of.number = 0.9}},
    {"repeat-penalty", {.kind = LLM_VALUE_NUMBER, .of.number = 1.15}},
};

typedef llm_provider_graph graph;

/* One return area per export: the caller reads it before the next call. */
static llm_result_handle handle_area;
static llm_result_unit unit_area;

LLM_EXPORT("graphs", "load-by-name") llm_result_handle *model_load_by_name(char *name, size_t name_len)
{
    free(name); /* this provider decides: MODEL, whatever the guest asked for */
    (void)name_len;
    llm_import_load_by_name(MODEL, strlen(MODEL), &handle_area);
    if (!handle_area.is_err) {
        graph *g = malloc(sizeof *g);
        if (!g)
            abort();
        g->host = handle_area.of.ok;
        handle_area.of.ok = llm_export_graph_new(g);
    }
    return &handle_area;
}

LLM_POST("graphs", "load-by-name") void model_load_by_name_post(llm_result_handle *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
}

LLM_EXPORT("graphs", "[method]graph.init-context") llm_result_handle *model_init_context(graph *g)
{
    llm_import_graph_init_context(g->host, &handle_area);
    if (handle_area.is_err)
        return &handle_area;
    llm_handle context = handle_area.of.ok;
    for (size_t i = 0; i < sizeof DEFAULTS / sizeof DEFAULTS[0]; i++) {
        int64_t payload;
        int32_t payload_len;
        llm_value_flat(&DEFAULTS[i].value, &payload, &payload_len);
        llm_import_context_set_parameter(context, DEFAULTS[i].name, strlen(DEFAULTS[i].name), DEFAULTS[i].value.kind,
                                         payload, payload_len, &unit_area);
        if (unit_area.is_err) { /* a default the host does not take: say which */
            llm_context_drop(context);
            handle_area.is_err = 1;
            handle_area.of.err = unit_area.of.err;
            return &handle_area;
        }
    }
    handle_area.of.ok = context; /* the host's context, now the caller's */
    return &handle_area;
}

LLM_POST("graphs", "[method]graph.init-context") void model_init_context_post(llm_result_handle *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
}
