;; memhog.wat: a Hewitt sample process that grows its memory without end on request, to show
;; that the host's memory limit (or, failing that, its compute limit) ends it.
;;
;;   Action=Grow    grows memory by 16 pages (1 MiB) in a loop forever, ignoring failures.
;;   other actions  Output "ok".
;;
;; It deliberately declares no memory maximum, so only the host bounds it. Module fields only:
;; compute::samples wraps it with prelude.wat into one module.

  (data (i32.const 0x0800) "Grow\00")
  (data (i32.const 0x0840) "ok\00")

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (call $begin (local.get $msg) (local.get $env))
    (if (call $eq (call $tag (i32.const 0x0740)) (i32.const 0x0800))
      (then
        (loop $forever
          (drop (memory.grow (i32.const 16)))
          (br $forever))))
    (call $respond_begin)
    (call $out_cstr (i32.const 0x0840))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
