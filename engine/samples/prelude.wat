;; prelude.wat: the runtime shared by Hewitt's sample processes.
;;
;; This is not a module on its own: compute::samples splices it into each sample as
;; `(module <prelude> <sample>)`, because WAT has no includes. It provides the C-level AO ABI
;; plumbing (memory, malloc), the few JSON reads the samples need, and a writer that builds
;; the result envelope.
;;
;; It deliberately does not parse JSON. It relies on the exact shape the host writes
;; (serde_json, compact, keys in a fixed order) and on the values it reads (tag values, ids)
;; containing no escapes. A `"` inside a JSON string is always escaped, so the patterns below,
;; each containing an unescaped quote, cannot match inside a string value.
;;
;; Memory layout (page 0 is static, the heap starts at page 1):
;;   0x0000..0x0100  unused, so that no valid pointer is NULL
;;   0x0100..0x0400  the sample's state, at fixed addresses
;;   0x0400..0x0800  the prelude's NUL-terminated constants, one per 64-byte slot
;;   0x0800..0x0C00  the sample's NUL-terminated constants, one per 64-byte slot
;;   0x0C00..0x0C20  scratch for decimal digits
;;   0x0D00..0x0E00  scratch for search patterns
;;   0x0E00..0x0E40  the prelude's constants, continued (one slot)
;;   0x10000..       the heap: a bump allocator, reset at the first malloc after handle returned
;;
;; The heap pointer and the reset flag are exported mutable globals so that a host snapshot
;; (memory plus exported globals) captures the whole state; the other globals only live during
;; one handle call.

  (memory (export "memory") 2)

  (global $heap_top (export "heap_top") (mut i32) (i32.const 0x10000))
  (global $heap_reset (export "heap_reset") (mut i32) (i32.const 0))
  (global $out_start (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  (global $msg (mut i32) (i32.const 0))
  (global $msg_len (mut i32) (i32.const 0))
  (global $env (mut i32) (i32.const 0))
  (global $env_len (mut i32) (i32.const 0))

  (data (i32.const 0x0400) "{\"ok\":true,\"response\":{\"Output\":\"\00")
  (data (i32.const 0x0440) "\",\"Messages\":[\00")
  (data (i32.const 0x0480) "],\"Spawns\":[\00")
  (data (i32.const 0x04C0) "],\"Assignments\":[]}}\00")
  (data (i32.const 0x0500) "{\"name\":\"\00")
  (data (i32.const 0x0540) "\",\"value\":\"\00")
  (data (i32.const 0x0580) "\"}\00")
  (data (i32.const 0x05C0) "{\"Target\":\"\00")
  (data (i32.const 0x0600) "\",\"Data\":\"\",\"Anchor\":\"\",\"Tags\":[\00")
  (data (i32.const 0x0640) "]}\00")
  (data (i32.const 0x0680) "{\"Data\":\"\",\"Tags\":[\00")
  (data (i32.const 0x06C0) "\",\"Error\":\"\00")
  (data (i32.const 0x0700) "\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}\00")
  (data (i32.const 0x0740) "Action\00")
  (data (i32.const 0x0780) "\"From\":\"\00")
  (data (i32.const 0x07C0) "\"Module\":{\"Id\":\"\00")
  (data (i32.const 0x0E00) "\"Process\":{\"Id\":\"\00")

  ;; Makes addresses below $end valid, growing memory if needed; returns 0 when it cannot.
  (func $ensure (param $end i64) (result i32)
    (local $have i64)
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.le_u (local.get $end) (local.get $have))
      (then (return (i32.const 1))))
    ;; The heap pointer is an i32: stay one page short of 4 GiB.
    (if (i64.gt_u (local.get $end) (i64.const 0xFFFF0000))
      (then (return (i32.const 0))))
    (i32.ne
      (memory.grow
        (i32.wrap_i64
          (i64.shr_u
            (i64.add (i64.sub (local.get $end) (local.get $have)) (i64.const 0xFFFF))
            (i64.const 16))))
      (i32.const -1)))

  ;; The AO ABI allocator. The host calls it for the msg and env of each message; everything
  ;; allocated during the previous message (including its output, which the host has read by
  ;; now) is released first. Returns NULL when memory cannot grow.
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local $end i64)
    (if (global.get $heap_reset)
      (then
        (global.set $heap_top (i32.const 0x10000))
        (global.set $heap_reset (i32.const 0))))
    (local.set $p (i32.and (i32.add (global.get $heap_top) (i32.const 7)) (i32.const -8)))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $size))))
    (if (i32.eqz (call $ensure (local.get $end)))
      (then (return (i32.const 0))))
    (global.set $heap_top (i32.wrap_i64 (local.get $end)))
    (local.get $p))

;; Length of the NUL-terminated string at $p. Bytewise up to a 16-byte boundary, then 16
  ;; bytes at a time: an aligned block never crosses the end of memory, and the msg can be
  ;; megabytes long.
  (func $strlen (param $p i32) (result i32)
    (local $q i32)
    (local.set $q (local.get $p))
    (block $aligned
      (loop $next
        (br_if $aligned (i32.eqz (i32.and (local.get $q) (i32.const 15))))
        (if (i32.eqz (i32.load8_u (local.get $q)))
          (then (return (i32.sub (local.get $q) (local.get $p)))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (block $found
      (loop $next
        (br_if $found (v128.any_true (i8x16.eq (v128.load (local.get $q)) (v128.const i64x2 0 0))))
        (local.set $q (i32.add (local.get $q) (i32.const 16)))
        (br $next)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $q))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $q) (local.get $p)))

  ;; Copies the NUL-terminated string at $src to $dst (without the NUL); returns the end of the copy.
  (func $copy_cstr (param $dst i32) (param $src i32) (result i32)
    (local $n i32)
    (local.set $n (call $strlen (local.get $src)))
    (memory.copy (local.get $dst) (local.get $src) (local.get $n))
    (i32.add (local.get $dst) (local.get $n)))

  ;; Whether the $n bytes at $p equal the NUL-terminated string at $s.
  (func $eq (param $p i32) (param $n i32) (param $s i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $n) (call $strlen (local.get $s)))
      (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (if (i32.eq (local.get $i) (local.get $n))
          (then (return (i32.const 1))))
        (br_if $differ
          (i32.ne
            (i32.load8_u (i32.add (local.get $p) (local.get $i)))
            (i32.load8_u (i32.add (local.get $s) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Address of the last occurrence of the $nn bytes at $nd in the $hn bytes at $h, or -1.
  ;; It searches backwards because tags and From come after Data in the msg, and Data can be
  ;; megabytes long.
  (func $rfind (param $h i32) (param $hn i32) (param $nd i32) (param $nn i32) (result i32)
    (local $i i32)
    (local $j i32)
    (if (i32.gt_u (local.get $nn) (local.get $hn))
      (then (return (i32.const -1))))
    (local.set $i (i32.add (local.get $h) (i32.sub (local.get $hn) (local.get $nn))))
    (loop $outer
      (local.set $j (i32.const 0))
      (block $mismatch
        (loop $inner
          (if (i32.eq (local.get $j) (local.get $nn))
            (then (return (local.get $i))))
          (br_if $mismatch
            (i32.ne
              (i32.load8_u (i32.add (local.get $i) (local.get $j)))
              (i32.load8_u (i32.add (local.get $nd) (local.get $j)))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $inner)))
      (if (i32.eq (local.get $i) (local.get $h))
        (then (return (i32.const -1))))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br $outer))
    (i32.const -1))

  ;; The string value that follows the (last) $nn-byte pattern at $nd in the $hn bytes at $h,
  ;; up to the next quote: (address, length), or (0, 0) when the pattern or the closing quote is absent.
  (func $value_after (param $h i32) (param $hn i32) (param $nd i32) (param $nn i32) (result i32 i32)
    (local $at i32)
    (local $v i32)
    (local $end i32)
    (local.set $at (call $rfind (local.get $h) (local.get $hn) (local.get $nd) (local.get $nn)))
    (if (i32.eq (local.get $at) (i32.const -1))
      (then (return (i32.const 0) (i32.const 0))))
    (local.set $v (i32.add (local.get $at) (local.get $nn)))
    (local.set $end (i32.add (local.get $h) (local.get $hn)))
    (local.set $at (local.get $v))
    (loop $next
      (if (i32.ge_u (local.get $at) (local.get $end))
        (then (return (i32.const 0) (i32.const 0))))
      (if (i32.eq (i32.load8_u (local.get $at)) (i32.const 0x22))
        (then (return (local.get $v) (i32.sub (local.get $at) (local.get $v)))))
      (local.set $at (i32.add (local.get $at) (i32.const 1)))
      (br $next))
    (return (i32.const 0) (i32.const 0)))

  ;; The value of the msg tag named by the NUL-terminated string at $name: (address, length),
  ;; or (0, 0) when the message has no such tag (the last one when it has several).
  (func $tag (param $name i32) (result i32 i32)
    (local $p i32)
    (local.set $p (call $copy_cstr (i32.const 0x0D00) (i32.const 0x0500)))
    (local.set $p (call $copy_cstr (local.get $p) (local.get $name)))
    (local.set $p (call $copy_cstr (local.get $p) (i32.const 0x0540)))
    (call $value_after
      (global.get $msg) (global.get $msg_len)
      (i32.const 0x0D00) (i32.sub (local.get $p) (i32.const 0x0D00))))

  ;; The string that follows the NUL-terminated pattern at $pattern in the msg (or the env).
  (func $msg_value (param $pattern i32) (result i32 i32)
    (call $value_after
      (global.get $msg) (global.get $msg_len)
      (local.get $pattern) (call $strlen (local.get $pattern))))
  (func $env_value (param $pattern i32) (result i32 i32)
    (call $value_after
      (global.get $env) (global.get $env_len)
      (local.get $pattern) (call $strlen (local.get $pattern))))

  ;; Parses the $n bytes at $p as a decimal u64: (value, 1), or (0, 0) when they are not one.
  (func $parse_u64 (param $p i32) (param $n i32) (result i64 i32)
    (local $v i64)
    (local $d i64)
    (local $end i32)
    (if (i32.eqz (local.get $n))
      (then (return (i64.const 0) (i32.const 0))))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (loop $next
      (local.set $d (i64.extend_i32_u (i32.sub (i32.load8_u (local.get $p)) (i32.const 0x30))))
      (if (i64.gt_u (local.get $d) (i64.const 9))
        (then (return (i64.const 0) (i32.const 0))))
      ;; v * 10 + d must not pass u64::MAX = 18446744073709551615.
      (if (i64.gt_u (local.get $v) (i64.const 1844674407370955161))
        (then (return (i64.const 0) (i32.const 0))))
      (if (i32.and
            (i64.eq (local.get $v) (i64.const 1844674407370955161))
            (i64.gt_u (local.get $d) (i64.const 5)))
        (then (return (i64.const 0) (i32.const 0))))
      (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (local.get $d)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $p) (local.get $end))))
    (local.get $v)
    (i32.const 1))

  ;; Records where this message's msg and env are; every handle starts with it.
  (func $begin (param $msg i32) (param $env i32)
    (global.set $msg (local.get $msg))
    (global.set $msg_len (call $strlen (local.get $msg)))
    (global.set $env (local.get $env))
    (global.set $env_len (call $strlen (local.get $env))))

  ;; The output writer appends at the top of the heap (nothing is allocated while it writes).
  (func $out_bytes (param $p i32) (param $n i32)
    (if (i32.eqz
          (call $ensure (i64.add (i64.extend_i32_u (global.get $out)) (i64.extend_i32_u (local.get $n)))))
      (then unreachable))
    (memory.copy (global.get $out) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))
  (func $out_byte (param $b i32)
    (if (i32.eqz (call $ensure (i64.add (i64.extend_i32_u (global.get $out)) (i64.const 1))))
      (then unreachable))
    (i32.store8 (global.get $out) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))
  (func $out_cstr (param $s i32)
    (call $out_bytes (local.get $s) (call $strlen (local.get $s))))
  (func $out_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 0x0C20))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 0x30) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
    (call $out_bytes (local.get $p) (i32.sub (i32.const 0x0C20) (local.get $p))))
  (func $out_comma
    (call $out_byte (i32.const 0x2C)))

  ;; Terminates the output and returns it; it stays valid until the next malloc.
  (func $out_end (result i32)
    (call $out_byte (i32.const 0))
    (global.set $heap_top (global.get $out))
    (global.set $heap_reset (i32.const 1))
    (global.get $out_start))

  ;; The result envelope, written in this order:
  ;;   respond_begin, <Output text>, respond_messages, <messages>, respond_spawns, <spawns>, respond_end
  ;; or, for an application error:
  ;;   respond_begin, <Output text>, respond_error(<message>)
  (func $respond_begin
    (global.set $out_start (i32.and (i32.add (global.get $heap_top) (i32.const 7)) (i32.const -8)))
    (global.set $out (global.get $out_start))
    (call $out_cstr (i32.const 0x0400)))
  (func $respond_messages
    (call $out_cstr (i32.const 0x0440)))
  (func $respond_spawns
    (call $out_cstr (i32.const 0x0480)))
  (func $respond_end (result i32)
    (call $out_cstr (i32.const 0x04C0))
    (call $out_end))
  (func $respond_error (param $error i32) (result i32)
    (call $out_cstr (i32.const 0x06C0))
    (call $out_cstr (local.get $error))
    (call $out_cstr (i32.const 0x0700))
    (call $out_end))

  ;; One outbox message: message_begin(target), tags separated by out_comma, message_end.
  (func $message_begin (param $target i32) (param $target_len i32)
    (call $out_cstr (i32.const 0x05C0))
    (call $out_bytes (local.get $target) (local.get $target_len))
    (call $out_cstr (i32.const 0x0600)))
  (func $message_end
    (call $out_cstr (i32.const 0x0640)))
  ;; One spawn: spawn_begin, tags separated by out_comma, spawn_end.
  (func $spawn_begin
    (call $out_cstr (i32.const 0x0680)))
  (func $spawn_end
    (call $out_cstr (i32.const 0x0640)))

  ;; One tag, named by a NUL-terminated string, valued by bytes, a string or a decimal.
  (func $tag_out (param $name i32) (param $v i32) (param $vn i32)
    (call $out_cstr (i32.const 0x0500))
    (call $out_cstr (local.get $name))
    (call $out_cstr (i32.const 0x0540))
    (call $out_bytes (local.get $v) (local.get $vn))
    (call $out_cstr (i32.const 0x0580)))
  (func $tag_out_cstr (param $name i32) (param $v i32)
    (call $tag_out (local.get $name) (local.get $v) (call $strlen (local.get $v))))
  (func $tag_out_u64 (param $name i32) (param $v i64)
    (call $out_cstr (i32.const 0x0500))
    (call $out_cstr (local.get $name))
    (call $out_cstr (i32.const 0x0540))
    (call $out_u64 (local.get $v))
    (call $out_cstr (i32.const 0x0580)))

  ;; The value of the tag named by the NUL-terminated string at $name among the env's Process
  ;; tags (those of the process itself, not of its Module): (address, length), or (0, 0) when
  ;; the process has no such tag. It searches from "Process":{"Id":" to "Module":{"Id":" when
  ;; the Module follows, else to the end: the host's serde_json sorts the keys (Module first),
  ;; but nothing here depends on that order.
  (func $process_tag (param $name i32) (result i32 i32)
    (local $p i32)
    (local $start i32)
    (local $end i32)
    (local.set $start
      (call $rfind
        (global.get $env) (global.get $env_len)
        (i32.const 0x0E00) (call $strlen (i32.const 0x0E00))))
    (if (i32.eq (local.get $start) (i32.const -1))
      (then (return (i32.const 0) (i32.const 0))))
    (local.set $end
      (call $rfind
        (global.get $env) (global.get $env_len)
        (i32.const 0x07C0) (call $strlen (i32.const 0x07C0))))
    (if (i32.le_s (local.get $end) (local.get $start))
      (then (local.set $end (i32.add (global.get $env) (global.get $env_len)))))
    (local.set $p (call $copy_cstr (i32.const 0x0D00) (i32.const 0x0500)))
    (local.set $p (call $copy_cstr (local.get $p) (local.get $name)))
    (local.set $p (call $copy_cstr (local.get $p) (i32.const 0x0540)))
    (call $value_after
      (local.get $start) (i32.sub (local.get $end) (local.get $start))
      (i32.const 0x0D00) (i32.sub (local.get $p) (i32.const 0x0D00))))

  ;; For a sample whose state outgrows page 0: it keeps that state at fixed addresses in
  ;; 0x10000..$base, calls heap_above($base) right after $begin and heap_rebase($base) after its
  ;; result is written, so that the heap (msg, env, output) lives above $base for good and no
  ;; input, however large, lands on the state.
  ;;
  ;; Only the first message after instantiation finds its msg and env at 0x10000, over the
  ;; state area (malloc starts there): heap_above moves them up by ($base - 0x10000), zeroes
  ;; the area they held (a fresh state is all zeros) and makes sure memory reaches $base. A
  ;; snapshot keeps heap_top and heap_reset, so a restored instance keeps the heap above $base.
  (func $heap_above (param $base i32)
    (local $delta i64)
    (local $used i32)
    (if (i32.ge_u (global.get $msg) (local.get $base))
      (then (return)))
    (local.set $delta (i64.extend_i32_u (i32.sub (local.get $base) (i32.const 0x10000))))
    (if (i32.eqz
          (call $ensure (i64.add (i64.extend_i32_u (global.get $heap_top)) (local.get $delta))))
      (then unreachable))
    (local.set $used (i32.sub (global.get $heap_top) (i32.const 0x10000)))
    (memory.copy (local.get $base) (i32.const 0x10000) (local.get $used))
    (memory.fill (i32.const 0x10000) (i32.const 0)
      (select
        (local.get $used)
        (i32.wrap_i64 (local.get $delta))
        (i64.lt_u (i64.extend_i32_u (local.get $used)) (local.get $delta))))
    (global.set $msg (i32.add (global.get $msg) (i32.wrap_i64 (local.get $delta))))
    (global.set $env (i32.add (global.get $env) (i32.wrap_i64 (local.get $delta))))
    (global.set $heap_top (i32.add (global.get $heap_top) (i32.wrap_i64 (local.get $delta)))))
  ;; Makes the next malloc (the next message's msg) start at $base instead of 0x10000. The
  ;; output just written stays valid: it lies above $base and the host reads it first.
  (func $heap_rebase (param $base i32)
    (global.set $heap_top (local.get $base))
    (global.set $heap_reset (i32.const 0)))
