;; counter.wat: a Hewitt sample process that counts, to show that state survives between
;; messages and that an Error result is rolled back.
;;
;;   Action=Increment  adds 1 to the counter; Output is the new count in decimal.
;;   Action=Fail       adds 1000 to the counter, then returns an Error result: a node that rolls
;;                     the memory back shows no trace of the 1000 afterwards.
;;   other actions     Output is the current count; nothing changes.
;;
;; It deliberately sends no messages and checks nothing else of the message. Module fields
;; only: compute::samples wraps it with prelude.wat into one module.

  ;; State: the count, a u64.
  (data (i32.const 0x0800) "Increment\00")
  (data (i32.const 0x0840) "Fail\00")
  (data (i32.const 0x0880) "Fail was asked for; the 1000 added must be rolled back\00")

  (func $count (result i64)
    (i64.load (i32.const 0x0100)))
  (func $count_add (param $n i64)
    (i64.store (i32.const 0x0100) (i64.add (call $count) (local.get $n))))

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $action i32)
    (local $action_len i32)
    (call $begin (local.get $msg) (local.get $env))
    (call $tag (i32.const 0x0740))
    (local.set $action_len)
    (local.set $action)
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0800))
      (then (call $count_add (i64.const 1))))
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0840))
      (then
        (call $count_add (i64.const 1000))
        (call $respond_begin)
        (call $out_u64 (call $count))
        (return (call $respond_error (i32.const 0x0880)))))
    (call $respond_begin)
    (call $out_u64 (call $count))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
