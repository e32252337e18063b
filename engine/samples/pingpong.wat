;; pingpong.wat: a Hewitt sample process that plays ball with a peer, to exercise the outbox
;; and delivery between processes.
;;
;;   Action=Serve, Peer=<pid>, Count=<n>  sends {Target: Peer, Action=Ball, Remaining=n}.
;;   Action=Ball, Remaining=<k>           adds 1 to `received`; when k > 0, replies to the
;;                                        message's From with Action=Ball, Remaining=k-1.
;;   Output is always `received` in decimal.
;;
;; A Serve without a Peer or a decimal Count is an Error result. A Ball without a decimal
;; Remaining is counted and not answered. It deliberately keeps no per-peer state. Module
;; fields only: compute::samples wraps it with prelude.wat into one module.

  ;; State: `received`, a u64.
  (data (i32.const 0x0800) "Serve\00")
  (data (i32.const 0x0840) "Ball\00")
  (data (i32.const 0x0880) "Peer\00")
  (data (i32.const 0x08C0) "Count\00")
  (data (i32.const 0x0900) "Remaining\00")
  (data (i32.const 0x0940) "Serve needs a Peer tag and a decimal Count tag\00")

  (func $received (result i64)
    (i64.load (i32.const 0x0100)))

  ;; Writes one Ball message to the $target_len-byte pid at $target.
  (func $ball (param $target i32) (param $target_len i32) (param $remaining i64)
    (call $message_begin (local.get $target) (local.get $target_len))
    (call $tag_out_cstr (i32.const 0x0740) (i32.const 0x0840))
    (call $out_comma)
    (call $tag_out_u64 (i32.const 0x0900) (local.get $remaining))
    (call $message_end))

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $action i32)
    (local $action_len i32)
    (local $peer i32)
    (local $peer_len i32)
    (local $n i64)
    (local $n_ok i32)
    (call $begin (local.get $msg) (local.get $env))
    (call $tag (i32.const 0x0740))
    (local.set $action_len)
    (local.set $action)

    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0800))
      (then
        (call $tag (i32.const 0x0880))
        (local.set $peer_len)
        (local.set $peer)
        (call $tag (i32.const 0x08C0))
        (call $parse_u64)
        (local.set $n_ok)
        (local.set $n)
        (call $respond_begin)
        (call $out_u64 (call $received))
        (if (i32.or (i32.eqz (local.get $peer_len)) (i32.eqz (local.get $n_ok)))
          (then (return (call $respond_error (i32.const 0x0940)))))
        (call $respond_messages)
        (call $ball (local.get $peer) (local.get $peer_len) (local.get $n))
        (call $respond_spawns)
        (return (call $respond_end))))

    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0840))
      (then
        (i64.store (i32.const 0x0100) (i64.add (call $received) (i64.const 1)))
        (call $tag (i32.const 0x0900))
        (call $parse_u64)
        (local.set $n_ok)
        (local.set $n)
        (call $msg_value (i32.const 0x0780))
        (local.set $peer_len)
        (local.set $peer)
        (call $respond_begin)
        (call $out_u64 (call $received))
        (call $respond_messages)
        (if (i32.and
              (i32.and (local.get $n_ok) (i64.gt_u (local.get $n) (i64.const 0)))
              (i32.ne (local.get $peer_len) (i32.const 0)))
          (then
            (call $ball (local.get $peer) (local.get $peer_len)
              (i64.sub (local.get $n) (i64.const 1)))))
        (call $respond_spawns)
        (return (call $respond_end))))

    (call $respond_begin)
    (call $out_u64 (call $received))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
