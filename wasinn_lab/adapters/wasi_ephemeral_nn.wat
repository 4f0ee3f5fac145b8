;; The `wasi_ephemeral_nn` adapter: WasmEdge's preview1 wasi-nn ABI (the twelve calls, its
;; GGML extensions included) for a core module made a component.
;;
;;   wasm-tools component new GUEST.wasm \
;;       --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.command.wasm \
;;       --adapt wasi_ephemeral_nn=THIS.wasm
;;
;; (`wasinn-lab component new`; wasinn_lab/adapters/__init__.py assembles this file and gives
;; it its world, `wasinn:llm/preview1-adapter` in guests/wit/preview1.wit.)
;;
;; What each call maps onto:
;;
;;   load_by_name[_with_config], load   wasinn:llm/preview1 load-by-name, load
;;   init_execution_context             wasinn:llm/graphs graph.init-context (a text model);
;;                                      wasi:nn load-by-name + init-execution-context (tensors)
;;   set_input                          text: index 1 is config JSON (preview1 configure), any
;;                                      other the prompt, which starts a generation at once
;;                                      (prompt context.generate: nothing is evaluated until
;;                                      it is pulled, but its usage counts the prompt);
;;                                      tensors: a wasi:nn tensor, kept until compute
;;   compute                            text: the generation pulled to its end (next-chunk),
;;                                      each chunk to stdout with stream-stdout; the pooled
;;                                      embedding (preview1 embed) when `embedding` is set;
;;                                      tensors: wasi:nn compute, inputs named "0", "1" ...
;;   compute_single / get_output_single one next-chunk / its text, or the usage JSON
;;   fini_single                        generation.cancel
;;   get_output                         index 1: usage JSON (generation.usage); any other:
;;                                      the text so far, or the embedding JSON; tensors: the
;;                                      output named by the index (tensor.data)
;;   unload                             preview1 unload
;;   finalize_execution_context         the context's resources dropped
;;
;; preview1's wire formats live here: index 1 is config in and usage out, errno 100 ends a
;; stream, a buffer too small gets errno 7 and the size needed, errnos from the host's error
;; kinds. The host's usage JSON says llama_build_number 0 and llama_commit its build: so
;; does this one.
;;
;; An adapter may have no memory, data, element, table or start section of its own: its
;; state lives in pages it grows the guest's memory by (as the wasi_snapshot_preview1
;; adapter does), found through $state; strings and lists the host returns are allocated
;; there through `cabi_import_realloc`; constants are written by code ($put).
;;
;; Handles are ids into two tables of 256 entries (graphs, contexts), numbered as the module
;; path numbers them (one count for both, from 0): an id's entry is `id % 256`, and it holds
;; `id + 1` while the id is live, so a stale or unknown id is errno 1 as in the module path.
(module
  ;; -- imports: core signatures as `wasm-tools component embed --dummy-names legacy
  ;;    --world wasinn:llm/preview1-adapter WIT -t` prints them ---------------------------
  (import "env" "memory" (memory 0))

  (import "wasinn:llm/preview1@0.1.1" "load-by-name" (func $p1_load_by_name (param i32 i32 i32 i32 i32 i32)))
  (import "wasinn:llm/preview1@0.1.1" "load" (func $p1_load (param i32 i32 i32 i32 i32)))
  (import "wasinn:llm/preview1@0.1.1" "unload" (func $p1_unload (param i32 i32)))
  (import "wasinn:llm/preview1@0.1.1" "configure" (func $p1_configure (param i32 i32 i32 i32)))
  (import "wasinn:llm/preview1@0.1.1" "embed" (func $p1_embed (param i32 i32 i32 i32)))

  (import "wasinn:llm/graphs@0.1.1" "[method]graph.init-context" (func $llm_init_context (param i32 i32)))
  (import "wasinn:llm/graphs@0.1.1" "[resource-drop]graph" (func $llm_drop_graph (param i32)))
  (import "wasinn:llm/prompt@0.1.1" "[method]context.get-parameter" (func $llm_get_parameter (param i32 i32 i32 i32)))
  (import "wasinn:llm/prompt@0.1.1" "[method]context.generate" (func $llm_generate (param i32 i32 i32 i32)))
  (import "wasinn:llm/prompt@0.1.1" "[method]generation.next-chunk" (func $llm_next_chunk (param i32 i32)))
  (import "wasinn:llm/prompt@0.1.1" "[method]generation.cancel" (func $llm_cancel (param i32)))
  (import "wasinn:llm/prompt@0.1.1" "[method]generation.usage" (func $llm_usage (param i32 i32)))
  (import "wasinn:llm/prompt@0.1.1" "[resource-drop]context" (func $llm_drop_context (param i32)))
  (import "wasinn:llm/prompt@0.1.1" "[resource-drop]generation" (func $llm_drop_generation (param i32)))

  (import "wasi:nn/graph@0.2.0-rc-2024-10-28" "load-by-name" (func $nn_load_by_name (param i32 i32 i32)))
  (import "wasi:nn/graph@0.2.0-rc-2024-10-28" "[method]graph.init-execution-context" (func $nn_init (param i32 i32)))
  (import "wasi:nn/graph@0.2.0-rc-2024-10-28" "[resource-drop]graph" (func $nn_drop_graph (param i32)))
  (import "wasi:nn/inference@0.2.0-rc-2024-10-28" "[method]graph-execution-context.compute" (func $nn_compute (param i32 i32 i32 i32)))
  (import "wasi:nn/inference@0.2.0-rc-2024-10-28" "[resource-drop]graph-execution-context" (func $nn_drop_context (param i32)))
  (import "wasi:nn/tensor@0.2.0-rc-2024-10-28" "[constructor]tensor" (func $nn_tensor (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:nn/tensor@0.2.0-rc-2024-10-28" "[method]tensor.data" (func $nn_tensor_data (param i32 i32)))
  (import "wasi:nn/tensor@0.2.0-rc-2024-10-28" "[resource-drop]tensor" (func $nn_drop_tensor (param i32)))
  (import "wasi:nn/errors@0.2.0-rc-2024-10-28" "[method]error.code" (func $nn_error_code (param i32) (result i32)))
  (import "wasi:nn/errors@0.2.0-rc-2024-10-28" "[resource-drop]error" (func $nn_drop_error (param i32)))

  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush" (func $write_and_flush (param i32 i32 i32 i32)))
  (import "wasi:io/error@0.2.12" "[resource-drop]error" (func $io_drop_error (param i32)))

  ;; -- state ------------------------------------------------------------------------------
  ;; One page, grown on the first call:
  ;;   +0 heap top, +4 heap end (the chunk being bump-allocated)
  ;;   +8 free lists, 32 x i32: blocks of 16 << k bytes, a 16-byte header (k, next) first
  ;;   +136 stdout stream (0: not yet asked for), +140 the next id: graphs and contexts share
;;        one count, from 0, as the module path's handles do (guests print them)
  ;;   +148 the build string last seen (ptr, len): every graph of one backend shares it
  ;;   +160 $RET (96 bytes) and +256 $RET2 (64): return areas of host calls
  ;;   +320 scratch (64): decimal numbers, a parameter's name
  ;;   +1024 graphs: 256 x 32 bytes; +9216 contexts: 256 x 128 bytes; then the first heap
  (global $state (mut i32) (i32.const 0))

  ;; graph entry
  ;;   +0 id + 1 (0: free)  +4 wasinn:llm graph  +8 wasi:nn graph (0: none yet)
  ;;   +12 name ptr  +16 name len (a registered model's; 0 for one from bytes)
  ;;   +20 build ptr  +24 build len  +28 u8 text model  +29 u8 stream-stdout
  ;; context entry
  ;;   +0 id + 1  +4 mode (1 text: wasinn:llm context, 2 tensors: wasi:nn context)  +8 handle
  ;;   +12 build ptr  +16 build len
  ;;   +20 generation (0: none)  +24 its state (0 none, 1 fresh: not pulled yet, 2 pulling, 3 over)
  ;;   +28 chunks pulled from it  +32 prompt ptr  +36 len  +40 capacity  +44 a prompt was set
  ;;   +48 text ptr  +52 len  +56 capacity  +60 latest chunk's offset in the text  +64 its len
  ;;   +68 stream-stdout  +72 embedding JSON ptr  +76 len
  ;;   tensors: +80 inputs (index, tensor) pairs  +84 count  +88 capacity
  ;;            +92 outputs as compute gave them (name ptr, name len, tensor)  +96 count

  ;; -- memory -----------------------------------------------------------------------------

  (func $init
    (local $base i32)
    (if (global.get $state) (then (return)))
    (local.set $base (memory.grow (i32.const 1)))
    (if (i32.eq (local.get $base) (i32.const -1)) (then (unreachable)))
    (local.set $base (i32.shl (local.get $base) (i32.const 16)))
    (memory.fill (local.get $base) (i32.const 0) (i32.const 65536))
    (global.set $state (local.get $base))
    (i32.store offset=0 (local.get $base) (i32.add (local.get $base) (i32.const 41984)))
    (i32.store offset=4 (local.get $base) (i32.add (local.get $base) (i32.const 65536))))

  (func $class (param $size i32) (result i32)
    (local $k i32)
    (local.set $size (i32.add (local.get $size) (i32.const 16)))
    (if (i32.lt_u (local.get $size) (i32.const 16)) (then (unreachable)))  ;; wrapped
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (i32.shl (i32.const 16) (local.get $k)) (local.get $size)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (if (i32.ge_u (local.get $k) (i32.const 28)) (then (unreachable)))
        (br $next)))
    (local.get $k))

  (func $alloc (param $size i32) (result i32)
    (local $k i32) (local $block i32) (local $total i32) (local $pages i32) (local $old i32) (local $s i32)
    (local.set $s (global.get $state))
    (local.set $k (call $class (local.get $size)))
    (local.set $block (i32.load offset=8 (i32.add (local.get $s) (i32.shl (local.get $k) (i32.const 2)))))
    (if (local.get $block)
      (then
        (i32.store offset=8 (i32.add (local.get $s) (i32.shl (local.get $k) (i32.const 2)))
          (i32.load offset=4 (local.get $block)))
        (return (i32.add (local.get $block) (i32.const 16)))))
    (local.set $total (i32.shl (i32.const 16) (local.get $k)))
    (if (i32.gt_u (local.get $total) (i32.sub (i32.load offset=4 (local.get $s)) (i32.load offset=0 (local.get $s))))
      (then
        ;; A new chunk: whole pages, at least one. The guest's allocator grows the same
        ;; memory, so chunks need not be contiguous; what is left of the old one is given up.
        (local.set $pages (i32.shr_u (i32.add (local.get $total) (i32.const 65535)) (i32.const 16)))
        (local.set $old (memory.grow (local.get $pages)))
        (if (i32.eq (local.get $old) (i32.const -1)) (then (unreachable)))
        (i32.store offset=0 (local.get $s) (i32.shl (local.get $old) (i32.const 16)))
        (i32.store offset=4 (local.get $s)
          (i32.add (i32.shl (local.get $old) (i32.const 16)) (i32.shl (local.get $pages) (i32.const 16))))))
    (local.set $block (i32.load offset=0 (local.get $s)))
    (i32.store offset=0 (local.get $s) (i32.add (local.get $block) (local.get $total)))
    (i32.store offset=0 (local.get $block) (local.get $k))
    (i32.add (local.get $block) (i32.const 16)))

  (func $free (param $ptr i32)
    (local $block i32) (local $slot i32)
    (if (i32.eqz (local.get $ptr)) (then (return)))
    (local.set $block (i32.sub (local.get $ptr) (i32.const 16)))
    (local.set $slot (i32.add (global.get $state) (i32.shl (i32.load (local.get $block)) (i32.const 2))))
    (i32.store offset=4 (local.get $block) (i32.load offset=8 (local.get $slot)))
    (i32.store offset=8 (local.get $slot) (local.get $block)))

  ;; What the host returned: an empty string or list may not have been allocated at all.
  (func $free_returned (param $ptr i32) (param $len i32)
    (if (local.get $len) (then (call $free (local.get $ptr)))))

  ;; Strings and lists the host returns are allocated here.
  (func (export "cabi_import_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $new i32)
    (call $init)
    (local.set $new (call $alloc (local.get $size)))
    (if (local.get $old)
      (then
        (memory.copy (local.get $new) (local.get $old)
          (select (local.get $old_size) (local.get $size) (i32.lt_u (local.get $old_size) (local.get $size))))
        (call $free (local.get $old))))
    (local.get $new))

  ;; A growable buffer at `field` (ptr, len, capacity at +0, +4, +8 of it) takes `n` more bytes.
  (func $append (param $field i32) (param $data i32) (param $n i32)
    (local $len i32) (local $cap i32) (local $new i32)
    (local.set $len (i32.load offset=4 (local.get $field)))
    (local.set $cap (i32.load offset=8 (local.get $field)))
    (if (i32.gt_u (i32.add (local.get $len) (local.get $n)) (local.get $cap))
      (then
        (local.set $cap (i32.shl (i32.add (local.get $len) (local.get $n)) (i32.const 1)))
        (if (i32.lt_u (local.get $cap) (i32.const 240)) (then (local.set $cap (i32.const 240))))
        (local.set $new (call $alloc (local.get $cap)))
        (memory.copy (local.get $new) (i32.load (local.get $field)) (local.get $len))
        (call $free (i32.load (local.get $field)))
        (i32.store (local.get $field) (local.get $new))
        (i32.store offset=8 (local.get $field) (local.get $cap))))
    (memory.copy (i32.add (i32.load (local.get $field)) (local.get $len)) (local.get $data) (local.get $n))
    (i32.store offset=4 (local.get $field) (i32.add (local.get $len) (local.get $n))))

  ;; The low `n` bytes of `value` at `p` (constants without a data section); returns p + n.
  (func $put (param $p i32) (param $value i64) (param $n i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i64.store8 (i32.add (local.get $p) (local.get $i)) (local.get $value))
        (local.set $value (i64.shr_u (local.get $value) (i64.const 8)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.add (local.get $p) (local.get $n)))

  ;; `value` in decimal at `p`; returns the end.
  (func $utoa (param $p i32) (param $value i32) (result i32)
    (local $digits i32) (local $v i32) (local $end i32)
    (local.set $v (local.get $value))
    (loop $count
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $count (local.get $v)))
    (local.set $end (i32.add (local.get $p) (local.get $digits)))
    (local.set $p (local.get $end))
    (loop $write
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $write (local.get $value)))
    (local.get $end))

  ;; Whether [ptr, ptr + len) is inside the guest's memory.
  (func $inside (param $ptr i32) (param $len i32) (result i32)
    (i64.le_u (i64.add (i64.extend_i32_u (local.get $ptr)) (i64.extend_i32_u (local.get $len)))
              (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16))))

  ;; Well-formed UTF-8 (what a WIT string must be: the host would trap on anything else).
  (func $utf8 (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $b i32) (local $b1 i32) (local $need i32) (local $lo i32) (local $hi i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $bad
      (loop $next
        (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i32.const 1))))
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.lt_u (local.get $b) (i32.const 0x80))
          (then (local.set $p (i32.add (local.get $p) (i32.const 1))) (br $next)))
        (local.set $lo (i32.const 0x80))
        (local.set $hi (i32.const 0xbf))
        (if (i32.lt_u (local.get $b) (i32.const 0xc2)) (then (br $bad)))
        (if (i32.lt_u (local.get $b) (i32.const 0xe0))
          (then (local.set $need (i32.const 1)))
          (else
            (if (i32.lt_u (local.get $b) (i32.const 0xf0))
              (then
                (local.set $need (i32.const 2))
                (if (i32.eq (local.get $b) (i32.const 0xe0)) (then (local.set $lo (i32.const 0xa0))))
                (if (i32.eq (local.get $b) (i32.const 0xed)) (then (local.set $hi (i32.const 0x9f)))))
              (else
                (if (i32.ge_u (local.get $b) (i32.const 0xf5)) (then (br $bad)))
                (local.set $need (i32.const 3))
                (if (i32.eq (local.get $b) (i32.const 0xf0)) (then (local.set $lo (i32.const 0x90))))
                (if (i32.eq (local.get $b) (i32.const 0xf4)) (then (local.set $hi (i32.const 0x8f))))))))
        (if (i32.gt_u (i32.add (local.get $p) (local.get $need)) (i32.sub (local.get $end) (i32.const 1)))
          (then (br $bad)))
        (local.set $b1 (i32.load8_u offset=1 (local.get $p)))
        (if (i32.or (i32.lt_u (local.get $b1) (local.get $lo)) (i32.gt_u (local.get $b1) (local.get $hi)))
          (then (br $bad)))
        (if (i32.ge_u (local.get $need) (i32.const 2))
          (then (if (i32.ne (i32.and (i32.load8_u offset=2 (local.get $p)) (i32.const 0xc0)) (i32.const 0x80))
            (then (br $bad)))))
        (if (i32.eq (local.get $need) (i32.const 3))
          (then (if (i32.ne (i32.and (i32.load8_u offset=3 (local.get $p)) (i32.const 0xc0)) (i32.const 0x80))
            (then (br $bad)))))
        (local.set $p (i32.add (local.get $p) (i32.add (local.get $need) (i32.const 1))))
        (br $next)))
    (i32.const 0))

  ;; -- errnos -----------------------------------------------------------------------------
  ;; preview1: 1 invalid-argument, 2 invalid-encoding, 4 busy, 5 runtime-error,
  ;; 6 unsupported-operation, 7 too-large, 8 not-found, 100 end-of-sequence,
  ;; 101 context-full, 102 prompt-too-long, 103 model-not-found.

  ;; wasinn:llm/preview1 error-kind, in its order.
  (func $errno_of_kind (param $kind i32) (result i32)
    (block $d (block $9 (block $8 (block $7 (block $6 (block $5 (block $4 (block $3 (block $2 (block $1 (block $0
      (br_table $0 $1 $2 $3 $4 $5 $6 $7 $8 $9 $d (local.get $kind)))
      (return (i32.const 1))) (return (i32.const 2))) (return (i32.const 4))) (return (i32.const 5)))
      (return (i32.const 6))) (return (i32.const 7))) (return (i32.const 8))) (return (i32.const 101)))
      (return (i32.const 102))) (return (i32.const 103)))
    (i32.const 5))

  ;; wasinn:llm/types error-code: invalid-argument, invalid-parameter, not-found,
  ;; unsupported-operation, busy, too-large, runtime-error.
  (func $errno_of_code (param $code i32) (result i32)
    (block $d (block $6 (block $5 (block $4 (block $3 (block $2 (block $1 (block $0
      (br_table $0 $1 $2 $3 $4 $5 $6 $d (local.get $code)))
      (return (i32.const 1))) (return (i32.const 1))) (return (i32.const 8))) (return (i32.const 6)))
      (return (i32.const 4))) (return (i32.const 7))) (return (i32.const 5)))
    (i32.const 5))

  ;; A wasi:nn error resource: its code (invalid-argument, invalid-encoding, timeout,
  ;; runtime-error, unsupported-operation, too-large, not-found, security, unknown), dropped.
  (func $errno_of_nn_error (param $error i32) (result i32)
    (local $code i32)
    (local.set $code (call $nn_error_code (local.get $error)))
    (call $nn_drop_error (local.get $error))
    (block $d (block $6 (block $5 (block $4 (block $3 (block $2 (block $1 (block $0
      (br_table $0 $1 $2 $3 $4 $5 $6 $d (local.get $code)))
      (return (i32.const 1))) (return (i32.const 2))) (return (i32.const 5))) (return (i32.const 5)))
      (return (i32.const 6))) (return (i32.const 7))) (return (i32.const 8)))
    (i32.const 5))

  ;; A wasinn:llm error record at `rec` (code, message, option<name>): its errno; its strings freed.
  (func $llm_error (param $rec i32) (result i32)
    (call $free_returned (i32.load offset=4 (local.get $rec)) (i32.load offset=8 (local.get $rec)))
    (if (i32.load8_u offset=12 (local.get $rec))
      (then (call $free_returned (i32.load offset=16 (local.get $rec)) (i32.load offset=20 (local.get $rec)))))
    (call $errno_of_code (i32.load8_u (local.get $rec))))

  ;; -- tables -----------------------------------------------------------------------------

  (func $graph (param $id i32) (result i32)
    (local $entry i32)
    (local.set $entry (i32.add (i32.add (global.get $state) (i32.const 1024))
                               (i32.shl (i32.and (local.get $id) (i32.const 255)) (i32.const 5))))
    (if (result i32) (i32.eq (i32.load (local.get $entry)) (i32.add (local.get $id) (i32.const 1)))
      (then (local.get $entry)) (else (i32.const 0))))

  (func $context (param $id i32) (result i32)
    (local $entry i32)
    (local.set $entry (i32.add (i32.add (global.get $state) (i32.const 9216))
                               (i32.shl (i32.and (local.get $id) (i32.const 255)) (i32.const 7))))
    (if (result i32) (i32.eq (i32.load (local.get $entry)) (i32.add (local.get $id) (i32.const 1)))
      (then (local.get $entry)) (else (i32.const 0))))

  ;; A free entry of a table (`base` offset in the state, `shift`: log2 of its entry size,
  ;; `counter`: offset of its next id), zeroed and given a fresh id; 0 when all are taken.
  (func $new_entry (param $base i32) (param $shift i32) (param $counter i32) (result i32)
    (local $tries i32) (local $id i32) (local $entry i32) (local $c i32)
    (local.set $c (i32.add (global.get $state) (local.get $counter)))
    (block $full
      (loop $next
        (br_if $full (i32.ge_u (local.get $tries) (i32.const 256)))
        (local.set $id (i32.load (local.get $c)))
        (i32.store (local.get $c) (i32.add (local.get $id) (i32.const 1)))
        (local.set $entry (i32.add (i32.add (global.get $state) (local.get $base))
                                   (i32.shl (i32.and (local.get $id) (i32.const 255)) (local.get $shift))))
        (if (i32.eqz (i32.load (local.get $entry)))
          (then
            (memory.fill (local.get $entry) (i32.const 0) (i32.shl (i32.const 1) (local.get $shift)))
            (i32.store (local.get $entry) (i32.add (local.get $id) (i32.const 1)))
            (return (local.get $entry))))
        (local.set $tries (i32.add (local.get $tries) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func $id_of (param $entry i32) (result i32)
    (i32.sub (i32.load (local.get $entry)) (i32.const 1)))

  ;; The build string `ptr, len` the host returned: the one already kept if it is the same
  ;; (every graph of a backend has one), else this one, kept.
  (func $intern_build (param $ptr i32) (param $len i32) (result i32)
    (local $s i32) (local $i i32)
    (local.set $s (global.get $state))
    (if (i32.eq (i32.load offset=152 (local.get $s)) (local.get $len))
      (then
        (block $differ
          (loop $next
            (if (i32.ge_u (local.get $i) (local.get $len))
              (then (call $free_returned (local.get $ptr) (local.get $len)) (return (i32.load offset=148 (local.get $s)))))
            (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
                                   (i32.load8_u (i32.add (i32.load offset=148 (local.get $s)) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))))
    (i32.store offset=148 (local.get $s) (local.get $ptr))
    (i32.store offset=152 (local.get $s) (local.get $len))
    (local.get $ptr))

  ;; -- loading ----------------------------------------------------------------------------

  ;; WasmEdge's `stream-stdout` (or `stream_stdout`) in a config JSON: -1 absent, 0 false,
  ;; 1 true, 2 any other value. The host has parsed the JSON by then (malformed is errno 2
  ;; before this runs); this finds the key's last occurrence.
  (func $stream_stdout (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $q i32) (local $found i32) (local $c i32)
    (local.set $found (i32.const -1))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const 15)) (local.get $end)))
        (if (i32.and
              (i32.or (i64.eq (i64.load (local.get $p)) (i64.const 0x2d6d616572747322))    ;; "stream-
                      (i64.eq (i64.load (local.get $p)) (i64.const 0x5f6d616572747322)))   ;; "stream_
              (i32.and (i32.eq (i32.load offset=8 (local.get $p)) (i32.const 0x6f647473))  ;; stdo
                       (i32.and (i32.eq (i32.load16_u offset=12 (local.get $p)) (i32.const 0x7475))  ;; ut
                                (i32.eq (i32.load8_u offset=14 (local.get $p)) (i32.const 0x22)))))  ;; "
          (then
            (local.set $q (call $skip_space (i32.add (local.get $p) (i32.const 15)) (local.get $end)))
            (if (i32.and (i32.lt_u (local.get $q) (local.get $end))
                         (i32.eq (i32.load8_u (local.get $q)) (i32.const 58)))  ;; ':': a key
              (then
                (local.set $q (call $skip_space (i32.add (local.get $q) (i32.const 1)) (local.get $end)))
                (local.set $found (i32.const 2))
                (if (i32.and (i32.le_u (i32.add (local.get $q) (i32.const 4)) (local.get $end))
                             (i32.eq (i32.load (local.get $q)) (i32.const 0x65757274)))  ;; true
                  (then (local.set $found (i32.const 1))))
                (if (i32.and (i32.le_u (i32.add (local.get $q) (i32.const 5)) (local.get $end))
                             (i32.and (i32.eq (i32.load (local.get $q)) (i32.const 0x736c6166))  ;; fals
                                      (i32.eq (i32.load8_u offset=4 (local.get $q)) (i32.const 0x65))))  ;; e
                  (then (local.set $found (i32.const 0))))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $found))

  (func $skip_space (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; After a preview1 load: $RET holds result<loaded, error-kind>. A graph entry for it, its
  ;; id at `out`; `name` (copied) for a registered model; `stream` -1, 0 or 1.
  (func $loaded (param $out i32) (param $name i32) (param $name_len i32) (param $stream i32) (result i32)
    (local $ret i32) (local $entry i32) (local $copy i32)
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (if (i32.load8_u (local.get $ret))
      (then (return (call $errno_of_kind (i32.load8_u offset=4 (local.get $ret))))))
    (if (i32.eq (local.get $stream) (i32.const 2))
      (then  ;; WasmEdge takes only true or false there
        (call $llm_drop_graph (i32.load offset=4 (local.get $ret)))
        (call $free_returned (i32.load offset=12 (local.get $ret)) (i32.load offset=16 (local.get $ret)))
        (return (i32.const 1))))
    (local.set $entry (call $new_entry (i32.const 1024) (i32.const 5) (i32.const 140)))
    (if (i32.eqz (local.get $entry))
      (then
        (call $llm_drop_graph (i32.load offset=4 (local.get $ret)))
        (call $free_returned (i32.load offset=12 (local.get $ret)) (i32.load offset=16 (local.get $ret)))
        (return (i32.const 4))))  ;; busy: 256 graphs held
    (i32.store offset=4 (local.get $entry) (i32.load offset=4 (local.get $ret)))
    (i32.store8 offset=28 (local.get $entry) (i32.load8_u offset=8 (local.get $ret)))
    (i32.store offset=20 (local.get $entry)
      (call $intern_build (i32.load offset=12 (local.get $ret)) (i32.load offset=16 (local.get $ret))))
    (i32.store offset=24 (local.get $entry) (i32.load offset=16 (local.get $ret)))
    (i32.store8 offset=29 (local.get $entry) (i32.eq (local.get $stream) (i32.const 1)))
    (if (local.get $name_len)
      (then
        (local.set $copy (call $alloc (local.get $name_len)))
        (memory.copy (local.get $copy) (local.get $name) (local.get $name_len))
        (i32.store offset=12 (local.get $entry) (local.get $copy))
        (i32.store offset=16 (local.get $entry) (local.get $name_len))))
    (i32.store (local.get $out) (call $id_of (local.get $entry)))
    (i32.const 0))

  (func (export "load") (param $builders i32) (param $count i32) (param $encoding i32) (param $target i32) (param $out i32) (result i32)
    (local $i i32) (local $b i32)
    (call $init)
    (if (i32.eqz (call $inside (local.get $out) (i32.const 4))) (then (return (i32.const 1))))
    (if (i32.gt_u (local.get $count) (i32.const 64)) (then (return (i32.const 1))))
    (if (i32.gt_u (local.get $encoding) (i32.const 6)) (then (return (i32.const 2))))
    (if (i32.gt_u (local.get $target) (i32.const 3)) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $builders) (i32.shl (local.get $count) (i32.const 3))))
      (then (return (i32.const 1))))
    (block $checked
      (loop $next
        (br_if $checked (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $b (i32.add (local.get $builders) (i32.shl (local.get $i) (i32.const 3))))
        (if (i32.eqz (call $inside (i32.load (local.get $b)) (i32.load offset=4 (local.get $b))))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; The builder array is already a list<list<u8>> ({ptr, len} pairs). WasmEdge numbers
    ;; 5 autodetect and 6 ggml, the WIT the other way round; its 3 (auto) is the WIT's cpu.
    (if (i32.eq (local.get $encoding) (i32.const 5))
      (then (local.set $encoding (i32.const 6)))
      (else (if (i32.eq (local.get $encoding) (i32.const 6)) (then (local.set $encoding (i32.const 5))))))
    (if (i32.eq (local.get $target) (i32.const 3)) (then (local.set $target (i32.const 0))))
    (call $p1_load (local.get $builders) (local.get $count) (local.get $encoding) (local.get $target)
                   (i32.add (global.get $state) (i32.const 160)))
    (call $loaded (local.get $out) (i32.const 0) (i32.const 0) (i32.const -1)))

  (func (export "load_by_name") (param $name i32) (param $len i32) (param $out i32) (result i32)
    (call $init)
    (if (i32.eqz (call $inside (local.get $out) (i32.const 4))) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $name) (local.get $len))) (then (return (i32.const 1))))
    (if (i32.eqz (call $utf8 (local.get $name) (local.get $len))) (then (return (i32.const 1))))
    (call $p1_load_by_name (local.get $name) (local.get $len) (i32.const 0) (i32.const 0) (i32.const 0)
                           (i32.add (global.get $state) (i32.const 160)))
    (call $loaded (local.get $out) (local.get $name) (local.get $len) (i32.const -1)))

  (func (export "load_by_name_with_config") (param $name i32) (param $len i32) (param $config i32) (param $config_len i32)
                                            (param $out i32) (result i32)
    (call $init)
    (if (i32.eqz (call $inside (local.get $out) (i32.const 4))) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $name) (local.get $len))) (then (return (i32.const 1))))
    (if (i32.eqz (call $utf8 (local.get $name) (local.get $len))) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $config) (local.get $config_len))) (then (return (i32.const 1))))
    (call $p1_load_by_name (local.get $name) (local.get $len) (i32.const 1) (local.get $config) (local.get $config_len)
                           (i32.add (global.get $state) (i32.const 160)))
    (call $loaded (local.get $out) (local.get $name) (local.get $len)
                  (call $stream_stdout (local.get $config) (local.get $config_len))))

  (func (export "unload") (param $id i32) (result i32)
    (local $entry i32) (local $ret i32) (local $errno i32)
    (call $init)
    (local.set $entry (call $graph (local.get $id)))
    (if (i32.eqz (local.get $entry)) (then (return (i32.const 1))))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (call $p1_unload (i32.load offset=4 (local.get $entry)) (local.get $ret))  ;; takes the graph
    (if (i32.load8_u (local.get $ret))
      (then (local.set $errno (call $errno_of_kind (i32.load8_u offset=1 (local.get $ret))))))
    (if (i32.load offset=8 (local.get $entry)) (then (call $nn_drop_graph (i32.load offset=8 (local.get $entry)))))
    (call $free (i32.load offset=12 (local.get $entry)))
    (i32.store (local.get $entry) (i32.const 0))
    (local.get $errno))

  ;; -- execution contexts -----------------------------------------------------------------

  (func (export "init_execution_context") (param $id i32) (param $out i32) (result i32)
    (local $graph i32) (local $ret i32) (local $mode i32) (local $handle i32) (local $entry i32)
    (call $init)
    (if (i32.eqz (call $inside (local.get $out) (i32.const 4))) (then (return (i32.const 1))))
    (local.set $graph (call $graph (local.get $id)))
    (if (i32.eqz (local.get $graph)) (then (return (i32.const 1))))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (if (i32.load8_u offset=28 (local.get $graph))
      (then  ;; a text model: a wasinn:llm context
        (local.set $mode (i32.const 1))
        (call $llm_init_context (i32.load offset=4 (local.get $graph)) (local.get $ret))
        (if (i32.load8_u (local.get $ret))
          (then (return (call $llm_error (i32.add (local.get $ret) (i32.const 4))))))
        (local.set $handle (i32.load offset=4 (local.get $ret))))
      (else  ;; tensors: a wasi:nn context on the same model, loaded there by name
        (local.set $mode (i32.const 2))
        (if (i32.eqz (i32.load offset=8 (local.get $graph)))
          (then
            (if (i32.eqz (i32.load offset=16 (local.get $graph))) (then (return (i32.const 6))))
            (call $nn_load_by_name (i32.load offset=12 (local.get $graph)) (i32.load offset=16 (local.get $graph))
                                   (local.get $ret))
            (if (i32.load8_u (local.get $ret))
              (then (return (call $errno_of_nn_error (i32.load offset=4 (local.get $ret))))))
            (i32.store offset=8 (local.get $graph) (i32.load offset=4 (local.get $ret)))))
        (call $nn_init (i32.load offset=8 (local.get $graph)) (local.get $ret))
        (if (i32.load8_u (local.get $ret))
          (then (return (call $errno_of_nn_error (i32.load offset=4 (local.get $ret))))))
        (local.set $handle (i32.load offset=4 (local.get $ret)))))
    (local.set $entry (call $new_entry (i32.const 9216) (i32.const 7) (i32.const 140)))
    (if (i32.eqz (local.get $entry))
      (then
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then (call $llm_drop_context (local.get $handle)))
          (else (call $nn_drop_context (local.get $handle))))
        (return (i32.const 4))))  ;; busy: 256 contexts held
    (i32.store offset=4 (local.get $entry) (local.get $mode))
    (i32.store offset=8 (local.get $entry) (local.get $handle))
    (i32.store offset=12 (local.get $entry) (i32.load offset=20 (local.get $graph)))
    (i32.store offset=16 (local.get $entry) (i32.load offset=24 (local.get $graph)))
    (i32.store offset=68 (local.get $entry) (i32.load8_u offset=29 (local.get $graph)))
    (i32.store (local.get $out) (call $id_of (local.get $entry)))
    (i32.const 0))

  (func $drop_outputs (param $c i32)
    (local $i i32) (local $item i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.load offset=96 (local.get $c))))
        (local.set $item (i32.add (i32.load offset=92 (local.get $c)) (i32.mul (local.get $i) (i32.const 12))))
        (call $free_returned (i32.load (local.get $item)) (i32.load offset=4 (local.get $item)))
        (call $nn_drop_tensor (i32.load offset=8 (local.get $item)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $free_returned (i32.load offset=92 (local.get $c)) (i32.load offset=96 (local.get $c)))
    (i32.store offset=92 (local.get $c) (i32.const 0))
    (i32.store offset=96 (local.get $c) (i32.const 0)))

  (func (export "finalize_execution_context") (param $id i32) (result i32)
    (local $c i32) (local $i i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 1))
      (then
        (if (i32.load offset=20 (local.get $c)) (then (call $llm_drop_generation (i32.load offset=20 (local.get $c)))))
        (call $llm_drop_context (i32.load offset=8 (local.get $c))))
      (else
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (i32.load offset=84 (local.get $c))))
            (call $nn_drop_tensor (i32.load offset=4 (i32.add (i32.load offset=80 (local.get $c))
                                                               (i32.shl (local.get $i) (i32.const 3)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))
        (call $drop_outputs (local.get $c))
        (call $nn_drop_context (i32.load offset=8 (local.get $c)))))
    (call $free (i32.load offset=32 (local.get $c)))
    (call $free (i32.load offset=48 (local.get $c)))
    (call $free (i32.load offset=72 (local.get $c)))
    (call $free (i32.load offset=80 (local.get $c)))
    (i32.store (local.get $c) (i32.const 0))
    (i32.const 0))

  ;; -- generations (text contexts) -------------------------------------------------------

  ;; A fresh generation on the context's prompt (the one under way, if any, dropped: the
  ;; host ends it); the text so far starts again. Returns an errno.
  (func $generate (param $c i32) (result i32)
    (local $ret i32)
    (if (i32.load offset=20 (local.get $c)) (then (call $llm_drop_generation (i32.load offset=20 (local.get $c)))))
    (i32.store offset=20 (local.get $c) (i32.const 0))
    (i32.store offset=24 (local.get $c) (i32.const 0))
    (i32.store offset=28 (local.get $c) (i32.const 0))
    (i32.store offset=52 (local.get $c) (i32.const 0))
    (i32.store offset=60 (local.get $c) (i32.const 0))
    (i32.store offset=64 (local.get $c) (i32.const 0))
    (call $free (i32.load offset=72 (local.get $c)))
    (i32.store offset=72 (local.get $c) (i32.const 0))
    (i32.store offset=76 (local.get $c) (i32.const 0))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (call $llm_generate (i32.load offset=8 (local.get $c)) (i32.load offset=32 (local.get $c)) (i32.load offset=36 (local.get $c))
                        (local.get $ret))
    (if (i32.load8_u (local.get $ret))
      (then (return (call $llm_error (i32.add (local.get $ret) (i32.const 4))))))
    (i32.store offset=20 (local.get $c) (i32.load offset=4 (local.get $ret)))
    (i32.store offset=24 (local.get $c) (i32.const 1))
    (i32.const 0))

  ;; The next chunk of the generation under way, added to the text: 0, 100 once it is over,
  ;; or the errno of what went wrong (a full context: 101, or 102 before the first chunk,
  ;; when the prompt itself did not fit). With `echo`, the chunk goes to stdout too.
  (func $pull (param $c i32) (param $echo i32) (result i32)
    (local $ret i32) (local $code i32)
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (i32.store offset=24 (local.get $c) (i32.const 2))
    (call $llm_next_chunk (i32.load offset=20 (local.get $c)) (local.get $ret))
    (if (i32.load8_u (local.get $ret))
      (then
        (i32.store offset=24 (local.get $c) (i32.const 3))
        (local.set $code (i32.load8_u offset=4 (local.get $ret)))
        (drop (call $llm_error (i32.add (local.get $ret) (i32.const 4))))
        (if (i32.eq (local.get $code) (i32.const 5))  ;; too-large
          (then (return (select (i32.const 101) (i32.const 102) (i32.load offset=28 (local.get $c))))))
        (return (call $errno_of_code (local.get $code)))))
    (if (i32.eqz (i32.load8_u offset=4 (local.get $ret)))
      (then
        (i32.store offset=24 (local.get $c) (i32.const 3))
        (return (i32.const 100))))
    (i32.store offset=60 (local.get $c) (i32.load offset=52 (local.get $c)))
    (i32.store offset=64 (local.get $c) (i32.load offset=12 (local.get $ret)))
    (call $append (i32.add (local.get $c) (i32.const 48)) (i32.load offset=8 (local.get $ret)) (i32.load offset=12 (local.get $ret)))
    (if (local.get $echo)
      (then (call $stdout (i32.load offset=8 (local.get $ret)) (i32.load offset=12 (local.get $ret)))))
    (call $free_returned (i32.load offset=8 (local.get $ret)) (i32.load offset=12 (local.get $ret)))
    (i32.store offset=28 (local.get $c) (i32.add (i32.load offset=28 (local.get $c)) (i32.const 1)))
    (i32.const 0))

  (func $stdout (param $p i32) (param $len i32)
    (local $s i32) (local $ret i32) (local $n i32)
    (local.set $s (global.get $state))
    (local.set $ret (i32.add (local.get $s) (i32.const 256)))
    (if (i32.eqz (i32.load offset=136 (local.get $s)))
      (then (i32.store offset=136 (local.get $s) (call $get_stdout))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        ;; blocking-write-and-flush takes at most 4096 bytes a call
        (local.set $n (select (i32.const 4096) (local.get $len) (i32.gt_u (local.get $len) (i32.const 4096))))
        (call $write_and_flush (i32.load offset=136 (local.get $s)) (local.get $p) (local.get $n) (local.get $ret))
        (if (i32.load8_u (local.get $ret))
          (then
            (if (i32.eqz (i32.load8_u offset=4 (local.get $ret)))  ;; last-operation-failed(error)
              (then (call $io_drop_error (i32.load offset=8 (local.get $ret)))))
            (br $done)))
        (local.set $p (i32.add (local.get $p) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $next))))

  ;; Whether the context makes embeddings: its `embedding` parameter is true.
  (func $embedding (param $c i32) (result i32)
    (local $name i32) (local $p i32) (local $ret i32)
    (local.set $name (i32.add (global.get $state) (i32.const 320)))
    (local.set $p (call $put (local.get $name) (i64.const 0x6e69646465626d65) (i32.const 8)))  ;; embeddin
    (drop (call $put (local.get $p) (i64.const 0x67) (i32.const 1)))  ;; g
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (call $llm_get_parameter (i32.load offset=8 (local.get $c)) (local.get $name) (i32.const 9) (local.get $ret))
    (if (i32.eqz (i32.load8_u (local.get $ret))) (then (return (i32.const 0))))  ;; none
    (if (i32.eq (i32.load8_u offset=8 (local.get $ret)) (i32.const 3))  ;; text(string): not ours to keep
      (then (call $free_returned (i32.load offset=16 (local.get $ret)) (i32.load offset=20 (local.get $ret)))
            (return (i32.const 0))))
    (i32.and (i32.eqz (i32.load8_u offset=8 (local.get $ret)))  ;; boolean
             (i32.ne (i32.load8_u offset=16 (local.get $ret)) (i32.const 0))))

  ;; {"n_embedding": N, "embedding": [...]} from the host's JSON array; returns an errno.
  (func $embed (param $c i32) (result i32)
    (local $ret i32) (local $array i32) (local $len i32) (local $n i32) (local $i i32) (local $json i32) (local $p i32)
    (if (i32.load offset=20 (local.get $c))
      (then
        (if (i32.ne (i32.load offset=24 (local.get $c)) (i32.const 3)) (then (call $llm_cancel (i32.load offset=20 (local.get $c)))))
        (i32.store offset=24 (local.get $c) (i32.const 3))))
    (call $free (i32.load offset=72 (local.get $c)))
    (i32.store offset=72 (local.get $c) (i32.const 0))
    (i32.store offset=76 (local.get $c) (i32.const 0))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (call $p1_embed (i32.load offset=8 (local.get $c)) (i32.load offset=32 (local.get $c)) (i32.load offset=36 (local.get $c))
                    (local.get $ret))
    (if (i32.load8_u (local.get $ret))
      (then (return (call $errno_of_kind (i32.load8_u offset=4 (local.get $ret))))))
    (local.set $array (i32.load offset=4 (local.get $ret)))
    (local.set $len (i32.load offset=8 (local.get $ret)))
    (if (i32.gt_u (local.get $len) (i32.const 2))
      (then
        (local.set $n (i32.const 1))
        (block $counted
          (loop $next
            (br_if $counted (i32.ge_u (local.get $i) (local.get $len)))
            (if (i32.eq (i32.load8_u (i32.add (local.get $array) (local.get $i))) (i32.const 44))  ;; ','
              (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))))
    (local.set $json (call $alloc (i32.add (local.get $len) (i32.const 48))))
    (local.set $p (local.get $json))
    (local.set $p (call $put (local.get $p) (i64.const 0x65626d655f6e227b) (i32.const 8)))  ;; {"n_embe
    (local.set $p (call $put (local.get $p) (i64.const 0x203a22676e696464) (i32.const 8)))  ;; dding":_
    (local.set $p (call $utoa (local.get $p) (local.get $n)))
    (local.set $p (call $put (local.get $p) (i64.const 0x6465626d6522202c) (i32.const 8)))  ;; , "embed
    (local.set $p (call $put (local.get $p) (i64.const 0x203a22676e6964) (i32.const 7)))    ;; ding":_
    (memory.copy (local.get $p) (local.get $array) (local.get $len))
    (local.set $p (i32.add (local.get $p) (local.get $len)))
    (local.set $p (call $put (local.get $p) (i64.const 0x7d) (i32.const 1)))  ;; }
    (call $free_returned (local.get $array) (local.get $len))
    (i32.store offset=72 (local.get $c) (local.get $json))
    (i32.store offset=76 (local.get $c) (i32.sub (local.get $p) (local.get $json)))
    (i32.const 0))

  ;; -- inputs -----------------------------------------------------------------------------

  (func (export "set_input") (param $id i32) (param $index i32) (param $tensor i32) (result i32)
    (local $c i32) (local $dims i32) (local $rank i32) (local $type i32) (local $data i32) (local $len i32)
    (local $ret i32) (local $errno i32) (local $stream i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    ;; The preview1 tensor: dims ptr, dims len, type (one byte, 3 of padding), data ptr, data len.
    (if (i32.eqz (call $inside (local.get $tensor) (i32.const 20))) (then (return (i32.const 1))))
    (local.set $dims (i32.load (local.get $tensor)))
    (local.set $rank (i32.load offset=4 (local.get $tensor)))
    (local.set $type (i32.load8_u offset=8 (local.get $tensor)))
    (local.set $data (i32.load offset=12 (local.get $tensor)))
    (local.set $len (i32.load offset=16 (local.get $tensor)))
    (if (i32.gt_u (local.get $rank) (i32.const 32)) (then (return (i32.const 1))))
    (if (i32.gt_u (local.get $type) (i32.const 5)) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $dims) (i32.shl (local.get $rank) (i32.const 2)))) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $data) (local.get $len))) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2))
      (then (return (call $set_tensor (local.get $c) (local.get $index) (local.get $dims) (local.get $rank)
                                      (local.get $type) (local.get $data) (local.get $len)))))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (if (i32.eq (local.get $index) (i32.const 1))
      (then  ;; config JSON, for the next generation
        (call $p1_configure (i32.load offset=8 (local.get $c)) (local.get $data) (local.get $len) (local.get $ret))
        (if (i32.load8_u (local.get $ret))
          (then (return (call $errno_of_kind (i32.load8_u offset=1 (local.get $ret))))))
        (local.set $stream (call $stream_stdout (local.get $data) (local.get $len)))
        (if (i32.eq (local.get $stream) (i32.const 2)) (then (return (i32.const 1))))
        (if (i32.ge_s (local.get $stream) (i32.const 0)) (then (i32.store offset=68 (local.get $c) (local.get $stream))))
        ;; A generation set up by the prompt and not pulled yet starts again, with this config.
        (if (i32.eq (i32.load offset=24 (local.get $c)) (i32.const 1))
          (then (return (call $generate (local.get $c)))))
        (return (i32.const 0))))
    ;; Any other index: the prompt (its dims say nothing: GGML prompts are often [1]).
    (if (i32.eqz (call $utf8 (local.get $data) (local.get $len))) (then (return (i32.const 1))))
    (i32.store offset=36 (local.get $c) (i32.const 0))
    (call $append (i32.add (local.get $c) (i32.const 32)) (local.get $data) (local.get $len))
    (i32.store offset=44 (local.get $c) (i32.const 1))
    (call $generate (local.get $c)))

  (func $element_size (param $type i32) (result i32)
    (block $d (block $8 (block $4 (block $2 (block $1
      (br_table $2 $4 $8 $1 $4 $8 $d (local.get $type)))
      (return (i32.const 1))) (return (i32.const 2))) (return (i32.const 4))) (return (i32.const 8)))
    (i32.const 0))

  ;; A tensor context's input: checked against its dims (as the host's tensor backends check
  ;; it), made a wasi:nn tensor, kept for compute under its index.
  (func $set_tensor (param $c i32) (param $index i32) (param $dims i32) (param $rank i32) (param $type i32)
                    (param $data i32) (param $len i32) (result i32)
    (local $expected i64) (local $i i32) (local $tensor i32) (local $pair i32) (local $new i32) (local $cap i32)
    (local.set $expected (i64.extend_i32_u (call $element_size (local.get $type))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $rank)))
        (local.set $expected (i64.mul (local.get $expected)
                                      (i64.extend_i32_u (i32.load (i32.add (local.get $dims) (i32.shl (local.get $i) (i32.const 2)))))))
        (if (i64.gt_u (local.get $expected) (i64.const 0xffffffff)) (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i64.ne (local.get $expected) (i64.extend_i32_u (local.get $len))) (then (return (i32.const 1))))
    ;; preview1 f16 f32 f64 u8 i32 i64; the WIT puts bf16 before u8
    (local.set $tensor (call $nn_tensor (local.get $dims) (local.get $rank)
                                        (select (local.get $type) (i32.add (local.get $type) (i32.const 1))
                                                (i32.lt_u (local.get $type) (i32.const 3)))
                                        (local.get $data) (local.get $len)))
    (local.set $i (i32.const 0))
    (block $absent
      (loop $next
        (br_if $absent (i32.ge_u (local.get $i) (i32.load offset=84 (local.get $c))))
        (local.set $pair (i32.add (i32.load offset=80 (local.get $c)) (i32.shl (local.get $i) (i32.const 3))))
        (if (i32.eq (i32.load (local.get $pair)) (local.get $index))
          (then
            (call $nn_drop_tensor (i32.load offset=4 (local.get $pair)))
            (i32.store offset=4 (local.get $pair) (local.get $tensor))
            (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.ge_u (i32.load offset=84 (local.get $c)) (i32.load offset=88 (local.get $c)))
      (then
        (local.set $cap (i32.add (i32.shl (i32.load offset=88 (local.get $c)) (i32.const 1)) (i32.const 4)))
        (local.set $new (call $alloc (i32.shl (local.get $cap) (i32.const 3))))
        (memory.copy (local.get $new) (i32.load offset=80 (local.get $c)) (i32.shl (i32.load offset=84 (local.get $c)) (i32.const 3)))
        (call $free (i32.load offset=80 (local.get $c)))
        (i32.store offset=80 (local.get $c) (local.get $new))
        (i32.store offset=88 (local.get $c) (local.get $cap))))
    (local.set $pair (i32.add (i32.load offset=80 (local.get $c)) (i32.shl (i32.load offset=84 (local.get $c)) (i32.const 3))))
    (i32.store (local.get $pair) (local.get $index))
    (i32.store offset=4 (local.get $pair) (local.get $tensor))
    (i32.store offset=84 (local.get $c) (i32.add (i32.load offset=84 (local.get $c)) (i32.const 1)))
    (i32.const 0))

  ;; -- computing --------------------------------------------------------------------------

  (func (export "compute") (param $id i32) (result i32)
    (local $c i32) (local $errno i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2))
      (then (return (call $compute_tensors (local.get $c)))))
    (if (i32.eqz (i32.load offset=44 (local.get $c))) (then (return (i32.const 1))))  ;; no prompt set
    (if (call $embedding (local.get $c)) (then (return (call $embed (local.get $c)))))
    ;; The whole generation, on a fresh one: a compute never continues the last.
    (if (i32.ne (i32.load offset=24 (local.get $c)) (i32.const 1))
      (then
        (local.set $errno (call $generate (local.get $c)))
        (if (local.get $errno) (then (return (local.get $errno))))))
    (block $over
      (loop $next
        (local.set $errno (call $pull (local.get $c) (i32.load offset=68 (local.get $c))))
        (br_if $next (i32.eqz (local.get $errno)))))
    (select (i32.const 0) (local.get $errno) (i32.eq (local.get $errno) (i32.const 100))))

  ;; wasi:nn compute on the inputs set since the last one, named by their index; the
  ;; outputs kept for get_output.
  (func $compute_tensors (param $c i32) (result i32)
    (local $count i32) (local $list i32) (local $names i32) (local $i i32) (local $pair i32) (local $item i32)
    (local $end i32) (local $ret i32)
    (local.set $count (i32.load offset=84 (local.get $c)))
    (local.set $list (call $alloc (i32.mul (local.get $count) (i32.const 24))))  ;; 12 a tensor, 12 its name
    (local.set $names (i32.add (local.get $list) (i32.mul (local.get $count) (i32.const 12))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $pair (i32.add (i32.load offset=80 (local.get $c)) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $item (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const 12))))
        (local.set $end (call $utoa (local.get $names) (i32.load (local.get $pair))))
        (i32.store (local.get $item) (local.get $names))
        (i32.store offset=4 (local.get $item) (i32.sub (local.get $end) (local.get $names)))
        (i32.store offset=8 (local.get $item) (i32.load offset=4 (local.get $pair)))
        (local.set $names (i32.add (local.get $names) (i32.const 12)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (call $nn_compute (i32.load offset=8 (local.get $c)) (local.get $list) (local.get $count) (local.get $ret))
    (i32.store offset=84 (local.get $c) (i32.const 0))  ;; the tensors went to the host, owned
    (call $free (local.get $list))
    (if (i32.load8_u (local.get $ret))
      (then (return (call $errno_of_nn_error (i32.load offset=4 (local.get $ret))))))
    (call $drop_outputs (local.get $c))
    (i32.store offset=92 (local.get $c) (i32.load offset=4 (local.get $ret)))
    (i32.store offset=96 (local.get $c) (i32.load offset=8 (local.get $ret)))
    (i32.const 0))

  (func (export "compute_single") (param $id i32) (result i32)
    (local $c i32) (local $errno i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2)) (then (return (i32.const 6))))
    (if (i32.eqz (i32.load offset=44 (local.get $c))) (then (return (i32.const 1))))
    ;; No generation under way (none yet, or the last is over): a new one, as WasmEdge does.
    (if (i32.or (i32.eqz (i32.load offset=24 (local.get $c))) (i32.eq (i32.load offset=24 (local.get $c)) (i32.const 3)))
      (then
        (local.set $errno (call $generate (local.get $c)))
        (if (local.get $errno) (then (return (local.get $errno))))))
    (call $pull (local.get $c) (i32.const 0)))

  (func (export "fini_single") (param $id i32) (result i32)
    (local $c i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2)) (then (return (i32.const 6))))
    (if (i32.and (i32.ne (i32.load offset=20 (local.get $c)) (i32.const 0))
                 (i32.ne (i32.load offset=24 (local.get $c)) (i32.const 3)))
      (then (call $llm_cancel (i32.load offset=20 (local.get $c)))))
    (if (i32.load offset=20 (local.get $c)) (then (i32.store offset=24 (local.get $c) (i32.const 3))))
    (i32.store offset=64 (local.get $c) (i32.const 0))
    (i32.const 0))

  ;; -- outputs ----------------------------------------------------------------------------

  ;; WasmEdge's contract: too small a buffer gets the size it needs in `written`, no data,
  ;; and errno 7.
  (func $write_output (param $data i32) (param $len i32) (param $out i32) (param $max i32) (param $written i32) (result i32)
    (if (i32.eqz (call $inside (local.get $written) (i32.const 4))) (then (return (i32.const 1))))
    (if (i32.eqz (call $inside (local.get $out) (local.get $max))) (then (return (i32.const 1))))
    (i32.store (local.get $written) (local.get $len))
    (if (i32.gt_u (local.get $len) (local.get $max)) (then (return (i32.const 7))))
    (memory.copy (local.get $out) (local.get $data) (local.get $len))
    (i32.const 0))

  ;; The usage JSON, as the host's preview1 front-end writes it.
  (func $usage (param $c i32) (param $out i32) (param $max i32) (param $written i32) (result i32)
    (local $ret i32) (local $json i32) (local $p i32) (local $input i32) (local $output i32)
    (local $build i32) (local $build_len i32) (local $i i32) (local $b i32) (local $errno i32)
    (local.set $ret (i32.add (global.get $state) (i32.const 160)))
    (if (i32.load offset=20 (local.get $c))
      (then
        (call $llm_usage (i32.load offset=20 (local.get $c)) (local.get $ret))
        (local.set $input (i32.load (local.get $ret)))          ;; prompt-tokens
        (local.set $output (i32.load offset=8 (local.get $ret)))))  ;; completion-tokens
    (local.set $build (i32.load offset=12 (local.get $c)))
    (local.set $build_len (i32.load offset=16 (local.get $c)))
    (local.set $json (call $alloc (i32.add (i32.const 128) (i32.mul (local.get $build_len) (i32.const 6)))))
    (local.set $p (local.get $json))
    (local.set $p (call $put (local.get $p) (i64.const 0x5f7475706e69227b) (i32.const 8)))  ;; {"input_
    (local.set $p (call $put (local.get $p) (i64.const 0x3a22736e656b6f74) (i32.const 8)))  ;; tokens":
    (local.set $p (call $put (local.get $p) (i64.const 0x20) (i32.const 1)))
    (local.set $p (call $utoa (local.get $p) (local.get $input)))
    (local.set $p (call $put (local.get $p) (i64.const 0x757074756f22202c) (i32.const 8)))  ;; , "outpu
    (local.set $p (call $put (local.get $p) (i64.const 0x736e656b6f745f74) (i32.const 8)))  ;; t_tokens
    (local.set $p (call $put (local.get $p) (i64.const 0x203a22) (i32.const 3)))            ;; ":_
    (local.set $p (call $utoa (local.get $p) (local.get $output)))
    (local.set $p (call $put (local.get $p) (i64.const 0x616d616c6c22202c) (i32.const 8)))  ;; , "llama
    (local.set $p (call $put (local.get $p) (i64.const 0x6e5f646c6975625f) (i32.const 8)))  ;; _build_n
    (local.set $p (call $put (local.get $p) (i64.const 0x203a227265626d75) (i32.const 8)))  ;; umber":_
    (local.set $p (call $put (local.get $p) (i64.const 0x6d616c6c22202c30) (i32.const 8)))  ;; 0, "llam
    (local.set $p (call $put (local.get $p) (i64.const 0x74696d6d6f635f61) (i32.const 8)))  ;; a_commit
    (local.set $p (call $put (local.get $p) (i64.const 0x22203a22) (i32.const 4)))          ;; ": "
    (block $done  ;; the build, as a JSON string
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $build_len)))
        (local.set $b (i32.load8_u (i32.add (local.get $build) (local.get $i))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 34)) (i32.eq (local.get $b) (i32.const 92)))  ;; " \
          (then (local.set $p (call $put (local.get $p) (i64.extend_i32_u (i32.or (i32.const 92) (i32.shl (local.get $b) (i32.const 8))))
                                         (i32.const 2))))
          (else
            (if (i32.lt_u (local.get $b) (i32.const 32))
              (then  ;; \u00XX
                (local.set $p (call $put (local.get $p) (i64.const 0x3030755c) (i32.const 4)))  ;; \u00
                (local.set $p (call $put (local.get $p) (i64.extend_i32_u (i32.add (i32.const 48) (i32.shr_u (local.get $b) (i32.const 4))))
                                         (i32.const 1)))
                (local.set $p (call $put (local.get $p) (i64.extend_i32_u (call $hex (i32.and (local.get $b) (i32.const 15))))
                                         (i32.const 1))))
              (else (i32.store8 (local.get $p) (local.get $b)) (local.set $p (i32.add (local.get $p) (i32.const 1)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $p (call $put (local.get $p) (i64.const 0x7d22) (i32.const 2)))  ;; "}
    (local.set $errno (call $write_output (local.get $json) (i32.sub (local.get $p) (local.get $json))
                                          (local.get $out) (local.get $max) (local.get $written)))
    (call $free (local.get $json))
    (local.get $errno))

  (func $hex (param $n i32) (result i32)
    (i32.add (local.get $n) (select (i32.const 87) (i32.const 48) (i32.gt_u (local.get $n) (i32.const 9)))))

  (func (export "get_output") (param $id i32) (param $index i32) (param $out i32) (param $max i32) (param $written i32) (result i32)
    (local $c i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2))
      (then (return (call $tensor_output (local.get $c) (local.get $index) (local.get $out) (local.get $max) (local.get $written)))))
    (if (i32.eq (local.get $index) (i32.const 1))
      (then (return (call $usage (local.get $c) (local.get $out) (local.get $max) (local.get $written)))))
    (if (i32.load offset=72 (local.get $c))
      (then (return (call $write_output (i32.load offset=72 (local.get $c)) (i32.load offset=76 (local.get $c))
                                        (local.get $out) (local.get $max) (local.get $written)))))
    (call $write_output (i32.load offset=48 (local.get $c)) (i32.load offset=52 (local.get $c))
                        (local.get $out) (local.get $max) (local.get $written)))

  ;; The output named by `index` (decimal), as the last compute gave it.
  (func $tensor_output (param $c i32) (param $index i32) (param $out i32) (param $max i32) (param $written i32) (result i32)
    (local $name i32) (local $len i32) (local $i i32) (local $item i32) (local $ret i32) (local $errno i32)
    (local.set $name (i32.add (global.get $state) (i32.const 320)))
    (local.set $len (i32.sub (call $utoa (local.get $name) (local.get $index)) (local.get $name)))
    (block $absent
      (loop $next
        (br_if $absent (i32.ge_u (local.get $i) (i32.load offset=96 (local.get $c))))
        (local.set $item (i32.add (i32.load offset=92 (local.get $c)) (i32.mul (local.get $i) (i32.const 12))))
        (if (i32.and (i32.eq (i32.load offset=4 (local.get $item)) (local.get $len))
                     (call $same (i32.load (local.get $item)) (local.get $name) (local.get $len)))
          (then
            (local.set $ret (i32.add (global.get $state) (i32.const 160)))
            (call $nn_tensor_data (i32.load offset=8 (local.get $item)) (local.get $ret))
            (local.set $errno (call $write_output (i32.load (local.get $ret)) (i32.load offset=4 (local.get $ret))
                                                  (local.get $out) (local.get $max) (local.get $written)))
            (call $free_returned (i32.load (local.get $ret)) (i32.load offset=4 (local.get $ret)))
            (return (local.get $errno))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
    (local $i i32)
    (block $differ
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                               (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "get_output_single") (param $id i32) (param $index i32) (param $out i32) (param $max i32) (param $written i32) (result i32)
    (local $c i32)
    (call $init)
    (local.set $c (call $context (local.get $id)))
    (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load offset=4 (local.get $c)) (i32.const 2)) (then (return (i32.const 6))))
    (if (i32.eq (local.get $index) (i32.const 1))
      (then (return (call $usage (local.get $c) (local.get $out) (local.get $max) (local.get $written)))))
    (call $write_output (i32.add (i32.load offset=48 (local.get $c)) (i32.load offset=60 (local.get $c)))
                        (i32.load offset=64 (local.get $c)) (local.get $out) (local.get $max) (local.get $written)))
)
