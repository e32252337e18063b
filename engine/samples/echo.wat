;; echo.wat: a Hewitt sample process that answers every message with the msg document it was
;; handed, as its Output (a JSON object), so that tests and clients can see exactly what the
;; node passes in (fields, tags, From, Forwarded-By, what an assignment's exclude left out).
;;
;;   Action=Assign  also asks the node (the result's Assignments) to assign this message (or the
;;                  one its Assign-Message tag names) to the process named by its Assign-To tag.
;;
;; It deliberately keeps no state. Module fields only: compute::samples wraps it with
;; prelude.wat into one module.

  (data (i32.const 0x0800) "{\"ok\":true,\"response\":{\"Output\":\00")
  (data (i32.const 0x0840) ",\"Messages\":[],\"Spawns\":[],\"Assignments\":[\00")
  (data (i32.const 0x0880) "]}}\00")
  (data (i32.const 0x08C0) "Assign\00")
  (data (i32.const 0x0900) "Assign-To\00")
  (data (i32.const 0x0940) "{\"Processes\":[\"\00")
  (data (i32.const 0x0980) "\"],\"Message\":\"\00")
  (data (i32.const 0x09C0) "\"}\00")
  (data (i32.const 0x0A00) "\"Id\":\"\00")
  (data (i32.const 0x0A40) "Assign-Message\00")

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $to i32) (local $to_len i32) (local $id i32) (local $id_len i32)
    (call $begin (local.get $msg) (local.get $env))
    (global.set $out_start (i32.and (i32.add (global.get $heap_top) (i32.const 7)) (i32.const -8)))
    (global.set $out (global.get $out_start))
    (call $out_cstr (i32.const 0x0800))
    (call $out_bytes (global.get $msg) (global.get $msg_len))
    (call $out_cstr (i32.const 0x0840))
    (if (call $eq (call $tag (i32.const 0x0740)) (i32.const 0x08C0))
      (then
        (call $tag (i32.const 0x0900))
        local.set $to_len
        local.set $to
        (call $tag (i32.const 0x0A40))
        local.set $id_len
        local.set $id
        (if (i32.eqz (local.get $id_len))
          (then
            (call $msg_value (i32.const 0x0A00))
            local.set $id_len
            local.set $id))
        (call $out_cstr (i32.const 0x0940))
        (call $out_bytes (local.get $to) (local.get $to_len))
        (call $out_cstr (i32.const 0x0980))
        (call $out_bytes (local.get $id) (local.get $id_len))
        (call $out_cstr (i32.const 0x09C0))))
    (call $out_cstr (i32.const 0x0880))
    (call $out_end))
