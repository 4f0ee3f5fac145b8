/* Hand-written canonical-ABI glue for components that *export* wasinn:llm@0.1.1 `graphs`
 * (and `prompt`) on top of the host's: the providers a guest is composed with. Header-only;
 * it adds to ../components/wasinn_llm.h (the import side: types, layouts, the imports a
 * guest uses) the rest of the imports and the export side.
 *
 * Names and core signatures are those
 *
 *     wasm-tools component embed --dummy-names legacy --world llm-provider WIT -t
 *
 * prints. What the export side relies on (canonical ABI, wasm32):
 * - An exported function gets its parameters flattened as an import's are; strings and
 *   lists in them were allocated in our memory through cabi_realloc by the caller, and
 *   are ours to free. A result that does not fit one core value is written to memory the
 *   export owns (here: one static return area per function), whose address it returns;
 *   the caller reads it, then calls `cabi_post_NAME(area)` so that the export frees what
 *   the area points to.
 * - A resource the component exports is its own: `[resource-new]T(rep)` (module
 *   "[export]INTERFACE") makes a handle for the caller from a rep of ours (a pointer here),
 *   a method's `self` arrives as that rep, and `INTERFACE#[dtor]T(rep)` is called when the
 *   last handle goes.
 * - A resource of the host's that we return (`own<context>` from the host's init-context)
 *   is returned as our handle to it: ownership passes to the caller.
 */
#ifndef LLM_PROVIDER_H
#define LLM_PROVIDER_H

#include "components/wasinn_llm.h"

/* ---- the rest of the host's imports ------------------------------------------------------ */

/* list<tuple<string, string>>: elements of 16 bytes. */
typedef struct {
    llm_string key, value;
} llm_property;
typedef struct {
    llm_property *ptr;
    size_t len;
} llm_properties;

/* list<tuple<string, value>>: the value (align 8) at offset 8, elements of 24 bytes. */
typedef struct {
    llm_string name;
    llm_value value;
} llm_parameter;
typedef struct {
    llm_parameter *ptr;
    size_t len;
} llm_parameters;

/* option<value>: tag at 0, the value at 8 (24 bytes). */
typedef struct {
    uint8_t is_some;
    llm_value value;
} llm_option_value;

_Static_assert(sizeof(llm_value) == 16 && sizeof(llm_parameter) == 24 && offsetof(llm_parameter, value) == 8,
               "tuple<string, value> layout");
_Static_assert(sizeof(llm_option_value) == 24 && offsetof(llm_option_value, value) == 8, "option<value> layout");

LLM_IMPORT("graphs", "[method]graph.list-properties")
extern void llm_import_graph_list_properties(llm_handle graph, llm_properties *ret);
LLM_IMPORT("graphs", "[method]graph.get-property")
extern void llm_import_graph_get_property(llm_handle graph, const char *key, size_t key_len, llm_option_string *ret);
LLM_IMPORT("graphs", "[method]graph.set-property")
extern void llm_import_graph_set_property(llm_handle graph, const char *key, size_t key_len, const char *value,
                                          size_t value_len, llm_result_unit *ret);
LLM_IMPORT("prompt", "[method]context.list-parameters")
extern void llm_import_context_list_parameters(llm_handle context, llm_parameters *ret);
LLM_IMPORT("prompt", "[method]context.get-parameter")
extern void llm_import_context_get_parameter(llm_handle context, const char *name, size_t name_len,
                                             llm_option_value *ret);

/* A value as set-parameter takes it flattened: its case, then one i64 slot (a bool, an s64,
 * an f64's bits or a string's pointer) and a string's length. */
static inline void llm_value_flat(const llm_value *value, int64_t *payload, int32_t *payload_len)
{
    *payload = 0;
    *payload_len = 0;
    switch (value->kind) {
    case LLM_VALUE_BOOLEAN: *payload = value->of.boolean; break;
    case LLM_VALUE_INTEGER: *payload = value->of.integer; break;
    case LLM_VALUE_NUMBER: memcpy(payload, &value->of.number, sizeof *payload); break;
    case LLM_VALUE_TEXT:
        *payload = (int64_t)(uintptr_t)value->of.text.ptr;
        *payload_len = (int32_t)value->of.text.len;
        break;
    }
}

/* The inverse, for an exported set-parameter's flattened value. */
static inline llm_value llm_value_unflat(int32_t kind, int64_t payload, int32_t payload_len)
{
    llm_value value = {.kind = (uint8_t)kind};
    switch (kind) {
    case LLM_VALUE_BOOLEAN: value.of.boolean = payload != 0; break;
    case LLM_VALUE_INTEGER: value.of.integer = payload; break;
    case LLM_VALUE_NUMBER: memcpy(&value.of.number, &payload, sizeof payload); break;
    default:
        value.of.text.ptr = (char *)(uintptr_t)payload;
        value.of.text.len = (size_t)payload_len;
        break;
    }
    return value;
}

static inline void llm_value_free(llm_value *value)
{
    if (value->kind == LLM_VALUE_TEXT)
        free(value->of.text.ptr);
}

/* ---- freeing what a return area points to (for the cabi_post_ functions) ----------------- */

static inline void llm_properties_free(llm_properties *list)
{
    for (size_t i = 0; i < list->len; i++) {
        free(list->ptr[i].key.ptr);
        free(list->ptr[i].value.ptr);
    }
    free(list->ptr);
}

static inline void llm_parameters_free(llm_parameters *list)
{
    for (size_t i = 0; i < list->len; i++) {
        free(list->ptr[i].name.ptr);
        llm_value_free(&list->ptr[i].value);
    }
    free(list->ptr);
}

/* An error record of our own, to return: message and name copied (the caller's post-return
 * frees them through llm_error_free). */
static inline llm_error llm_error_new(uint8_t code, const char *message)
{
    llm_error err = {.code = code};
    err.message.len = strlen(message);
    err.message.ptr = malloc(err.message.len ? err.message.len : 1);
    if (!err.message.ptr)
        abort();
    memcpy(err.message.ptr, message, err.message.len);
    return err;
}

/* ---- the export side ---------------------------------------------------------------------- */

#define LLM_EXPORT(interface, name) __attribute__((export_name("wasinn:llm/" interface "@0.1.1#" name)))
#define LLM_POST(interface, name) __attribute__((export_name("cabi_post_wasinn:llm/" interface "@0.1.1#" name)))
#define LLM_EXPORTED_RESOURCE(interface, name) \
    __attribute__((import_module("[export]wasinn:llm/" interface "@0.1.1"), import_name(name)))

LLM_EXPORTED_RESOURCE("graphs", "[resource-new]graph") extern llm_handle llm_export_graph_new(void *rep);

#ifdef LLM_PROVIDES_PROMPT
LLM_EXPORTED_RESOURCE("prompt", "[resource-new]context") extern llm_handle llm_export_context_new(void *rep);
LLM_EXPORTED_RESOURCE("prompt", "[resource-new]generation") extern llm_handle llm_export_generation_new(void *rep);
#endif

/* ---- a provider's graph: the host's, held; its properties passed through --------------------- */

typedef struct {
    llm_handle host;
} llm_provider_graph;

static llm_properties llm_provider_properties_area;
static llm_option_string llm_provider_option_area;
static llm_result_unit llm_provider_unit_area;

LLM_EXPORT("graphs", "[method]graph.list-properties") llm_properties *provider_list_properties(llm_provider_graph *g)
{
    llm_import_graph_list_properties(g->host, &llm_provider_properties_area);
    return &llm_provider_properties_area;
}

LLM_POST("graphs", "[method]graph.list-properties") void provider_list_properties_post(llm_properties *area)
{
    llm_properties_free(area);
}

LLM_EXPORT("graphs", "[method]graph.get-property") llm_option_string *provider_get_property(llm_provider_graph *g, char *key,
                                                                                       size_t key_len)
{
    llm_import_graph_get_property(g->host, key, key_len, &llm_provider_option_area);
    free(key);
    return &llm_provider_option_area;
}

LLM_POST("graphs", "[method]graph.get-property") void provider_get_property_post(llm_option_string *area)
{
    if (area->is_some)
        free(area->value.ptr);
}

LLM_EXPORT("graphs", "[method]graph.set-property") llm_result_unit *provider_set_property(llm_provider_graph *g, char *key,
                                                                                     size_t key_len, char *value,
                                                                                     size_t value_len)
{
    llm_import_graph_set_property(g->host, key, key_len, value, value_len, &llm_provider_unit_area);
    free(key);
    free(value);
    return &llm_provider_unit_area;
}

LLM_POST("graphs", "[method]graph.set-property") void provider_set_property_post(llm_result_unit *area)
{
    if (area->is_err)
        llm_error_free(&area->of.err);
}

LLM_EXPORT("graphs", "[dtor]graph") void provider_graph_dtor(llm_provider_graph *g)
{
    llm_graph_drop(g->host);
    free(g);
}

#endif /* LLM_PROVIDER_H */
