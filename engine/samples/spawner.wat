;; spawner.wat: a Hewitt sample process that spawns children from its own module, to exercise
;; spawns and the Spawned notice.
;;
;;   Action=Spawn-Child  one spawn with tags Module=<env Module.Id>, Name=child; Output is
;;                       `spawned` in decimal.
;;   Action=Spawned      (the notice, with tag Process=<new pid>) adds 1 to `spawned`; Output
;;                       is the Process tag's value.
;;   other actions       Output is `spawned` in decimal.
;;
;; It deliberately does not remember which children it has. Module fields only:
;; compute::samples wraps it with prelude.wat into one module.

  ;; State: `spawned`, a u64.
  (data (i32.const 0x0800) "Spawn-Child\00")
  (data (i32.const 0x0840) "Spawned\00")
  (data (i32.const 0x0880) "Process\00")
  (data (i32.const 0x08C0) "Module\00")
  (data (i32.const 0x0900) "Name\00")
  (data (i32.const 0x0940) "child\00")
  (data (i32.const 0x0980) "the env has no Module.Id\00")

  (func $spawned (result i64)
    (i64.load (i32.const 0x0100)))

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $action i32)
    (local $action_len i32)
    (local $v i32)
    (local $v_len i32)
    (call $begin (local.get $msg) (local.get $env))
    (call $tag (i32.const 0x0740))
    (local.set $action_len)
    (local.set $action)

    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0800))
      (then
        (call $env_value (i32.const 0x07C0))
        (local.set $v_len)
        (local.set $v)
        (call $respond_begin)
        (call $out_u64 (call $spawned))
        (if (i32.eqz (local.get $v_len))
          (then (return (call $respond_error (i32.const 0x0980)))))
        (call $respond_messages)
        (call $respond_spawns)
        (call $spawn_begin)
        (call $tag_out (i32.const 0x08C0) (local.get $v) (local.get $v_len))
        (call $out_comma)
        (call $tag_out_cstr (i32.const 0x0900) (i32.const 0x0940))
        (call $spawn_end)
        (return (call $respond_end))))

    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0840))
      (then
        (i64.store (i32.const 0x0100) (i64.add (call $spawned) (i64.const 1)))
        (call $tag (i32.const 0x0880))
        (local.set $v_len)
        (local.set $v)
        (call $respond_begin)
        (call $out_bytes (local.get $v) (local.get $v_len))
        (call $respond_messages)
        (call $respond_spawns)
        (return (call $respond_end))))

    (call $respond_begin)
    (call $out_u64 (call $spawned))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
