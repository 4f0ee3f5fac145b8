/* Hand-written canonical-ABI glue for the standard wasi:nn@0.2.0-rc-2024-10-28 imports (the
 * WIT ABI, not preview1's wasi_ephemeral_nn) that a C guest uses. Header-only, as
 * wasi_nn.h: include it in one .c file.
 *
 * The guest is a wasm32-wasi (preview1) core module; guests.py gives it the world
 * `nn-imports` (wasm-tools component embed) and makes it a component with the
 * wasi_snapshot_preview1 command adapter, which provides the wasi:cli/run export. Every
 * import name and core signature here is the one
 *
 *     wasm-tools component embed --dummy-names legacy --world nn-imports WIT -t
 *
 * prints. The canonical-ABI rules it relies on are summed up in wasinn_llm.h; here:
 * - resources (tensor, graph, graph-execution-context, error) are i32 handles; `compute`
 *   takes its input tensors as `own`: they belong to the host afterwards (never drop them);
 *   the output tensors it returns are the guest's, to drop;
 * - errors are `error` resources: `code` and `data` (a message) are methods, and the guest
 *   drops the error when done with it;
 * - lists and strings returned by the host were allocated through `cabi_realloc`.
 */
#ifndef WASI_NN_WIT_H
#define WASI_NN_WIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t wnn_handle;

/* enum tensor-type (u8; the WIT numbering, which differs from preview1's) */
enum wnn_tensor_type { WNN_FP16 = 0, WNN_FP32 = 1, WNN_FP64 = 2, WNN_BF16 = 3, WNN_U8 = 4, WNN_I32 = 5, WNN_I64 = 6 };

/* enum error-code (u8) */
enum wnn_error_code {
    WNN_INVALID_ARGUMENT = 0,
    WNN_INVALID_ENCODING = 1,
    WNN_TIMEOUT = 2,
    WNN_RUNTIME_ERROR = 3,
    WNN_UNSUPPORTED_OPERATION = 4,
    WNN_TOO_LARGE = 5,
    WNN_NOT_FOUND = 6,
    WNN_SECURITY = 7,
    WNN_UNKNOWN = 8,
};

/* list<T> and string: {u32 ptr; u32 len} (len in elements), 8 bytes. */
typedef struct {
    void *ptr;
    size_t len;
} wnn_list;

/* named-tensor = tuple<string, own<tensor>>: 12 bytes, align 4. */
typedef struct {
    const char *name;
    size_t name_len;
    wnn_handle tensor;
} wnn_named_tensor;

/* result<own<T>, own<error>>: u8 tag, the handle at 4 (8 bytes). */
typedef struct {
    uint8_t is_err;
    wnn_handle handle;
} wnn_result_handle;

/* result<list<named-tensor>, own<error>>: u8 tag, at 4 the list or the error handle (12 bytes). */
typedef struct {
    uint8_t is_err;
    union {
        wnn_list ok;
        wnn_handle err;
    } of;
} wnn_result_list;

_Static_assert(sizeof(wnn_list) == 8, "list is {ptr, len}");
_Static_assert(sizeof(wnn_named_tensor) == 12, "named-tensor layout");
_Static_assert(sizeof(wnn_result_handle) == 8 && offsetof(wnn_result_handle, handle) == 4, "result<handle> layout");
_Static_assert(sizeof(wnn_result_list) == 12 && offsetof(wnn_result_list, of) == 4, "result<list> layout");

/* ---- the imports ---------------------------------------------------------------------- */

#define WNN_IMPORT(interface, name) \
    __attribute__((import_module("wasi:nn/" interface "@0.2.0-rc-2024-10-28"), import_name(name)))

/* tensor: constructor(dimensions: list<u32>, ty: tensor-type, data: list<u8>) -> tensor
 * (i32 i32 i32 i32 i32) -> i32 */
WNN_IMPORT("tensor", "[constructor]tensor")
extern wnn_handle wnn_tensor_new(const uint32_t *dims, size_t dims_len, int32_t type, const void *data, size_t len);
/* tensor: dimensions(self) -> list<u32>; data(self) -> list<u8>  (i32 i32): a return area */
WNN_IMPORT("tensor", "[method]tensor.dimensions") extern void wnn_tensor_dimensions(wnn_handle tensor, wnn_list *ret);
WNN_IMPORT("tensor", "[method]tensor.data") extern void wnn_tensor_data(wnn_handle tensor, wnn_list *ret);
/* tensor: ty(self) -> tensor-type  (i32) -> i32 */
WNN_IMPORT("tensor", "[method]tensor.ty") extern int32_t wnn_tensor_ty(wnn_handle tensor);
WNN_IMPORT("tensor", "[resource-drop]tensor") extern void wnn_tensor_drop(wnn_handle tensor);

/* errors: code(self) -> error-code  (i32) -> i32; data(self) -> string  (i32 i32) */
WNN_IMPORT("errors", "[method]error.code") extern int32_t wnn_error_code(wnn_handle error);
WNN_IMPORT("errors", "[method]error.data") extern void wnn_error_data(wnn_handle error, wnn_list *ret);
WNN_IMPORT("errors", "[resource-drop]error") extern void wnn_error_drop(wnn_handle error);

/* inference: compute(self, inputs: list<named-tensor>) -> result<list<named-tensor>, error>
 * (i32 i32 i32 i32) */
WNN_IMPORT("inference", "[method]graph-execution-context.compute")
extern void wnn_import_compute(wnn_handle context, const wnn_named_tensor *inputs, size_t n, wnn_result_list *ret);
WNN_IMPORT("inference", "[resource-drop]graph-execution-context") extern void wnn_context_drop(wnn_handle context);

/* graph: init-execution-context(self) -> result<graph-execution-context, error>  (i32 i32) */
WNN_IMPORT("graph", "[method]graph.init-execution-context")
extern void wnn_import_init_execution_context(wnn_handle graph, wnn_result_handle *ret);
/* graph: load-by-name(name: string) -> result<graph, error>  (i32 i32 i32) */
WNN_IMPORT("graph", "load-by-name")
extern void wnn_import_load_by_name(const char *name, size_t name_len, wnn_result_handle *ret);
WNN_IMPORT("graph", "[resource-drop]graph") extern void wnn_graph_drop(wnn_handle graph);

/* The host allocates the lists and strings it returns in our memory through this export. */
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

static inline const char *wnn_error_code_name(int32_t code)
{
    static const char *const names[] = {"invalid-argument", "invalid-encoding", "timeout",
                                        "runtime-error", "unsupported-operation", "too-large",
                                        "not-found", "security", "unknown"};
    return code >= 0 && code < (int32_t)(sizeof names / sizeof names[0]) ? names[code] : "unknown";
}

static inline const char *wnn_tensor_type_name(int32_t type)
{
    static const char *const names[] = {"FP16", "FP32", "FP64", "BF16", "U8", "I32", "I64"};
    return type >= 0 && type < (int32_t)(sizeof names / sizeof names[0]) ? names[type] : "?";
}

/* "error: CALL failed: CODE: DATA" on stderr, the error dropped, then exit 2 (a
 * component's exit status reaches the host as 1: WASI 0.2's exit takes only ok or err). */
static inline void wnn_fail(const char *call, wnn_handle error)
{
    wnn_list data;
    wnn_error_data(error, &data);
    fprintf(stderr, "error: %s failed: %s: %.*s\n", call, wnn_error_code_name(wnn_error_code(error)), (int)data.len,
            (const char *)data.ptr);
    free(data.ptr);
    wnn_error_drop(error);
    exit(2);
}

static inline wnn_handle wnn_load_by_name(const char *name)
{
    wnn_result_handle r;
    wnn_import_load_by_name(name, strlen(name), &r);
    if (r.is_err)
        wnn_fail("load-by-name", r.handle);
    return r.handle;
}

static inline wnn_handle wnn_init_execution_context(wnn_handle graph)
{
    wnn_result_handle r;
    wnn_import_init_execution_context(graph, &r);
    if (r.is_err)
        wnn_fail("init-execution-context", r.handle);
    return r.handle;
}

/* The outputs (malloc'd, *n of them; each name and tensor the guest's to free and drop). */
static inline wnn_named_tensor *wnn_compute(wnn_handle context, const wnn_named_tensor *inputs, size_t n_inputs,
                                            size_t *n)
{
    wnn_result_list r;
    wnn_import_compute(context, inputs, n_inputs, &r);
    if (r.is_err)
        wnn_fail("compute", r.of.err);
    *n = r.of.ok.len;
    return r.of.ok.ptr;
}

#endif
