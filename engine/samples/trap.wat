;; trap.wat: a Hewitt sample process that traps on request, to show that a guest fault is a
;; failed evaluation confined to its process.
;;
;;   Action=Trap    executes `unreachable`.
;;   other actions  Output "ok".
;;
;; It deliberately keeps no state. Module fields only: compute::samples wraps it with
;; prelude.wat into one module.

  (data (i32.const 0x0800) "Trap\00")
  (data (i32.const 0x0840) "ok\00")

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (call $begin (local.get $msg) (local.get $env))
    (if (call $eq (call $tag (i32.const 0x0740)) (i32.const 0x0800))
      (then unreachable))
    (call $respond_begin)
    (call $out_cstr (i32.const 0x0840))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
