;; exchange.wat: a Hewitt sample process that is a matching engine: one instrument, a
;; price-time priority limit order book, fed the exchange-core order mix (PERF.md, "Exchange
;; workload"). Integer arithmetic only, no imports: it is as deterministic as the counter.
;;
;; Actions (tag Action; every number is decimal in its tag; the account is the msg's From, a
;; 43-character id):
;;   Place   Order-Id (u64, chosen by the client, unique among resting orders), Side (Buy|Sell),
;;           Price (ticks, 1..=65535), Size (1..=4294967295), Type (GTC|IOC).
;;           Matches against the opposite side while prices cross: best price first, FIFO
;;           within a price, each fill at the resting (maker) order's price. A GTC remainder
;;           rests; an IOC remainder is cancelled.
;;   Cancel  Order-Id: removes the resting order.
;;   Move    Order-Id, Price: exchange-core's move. The order leaves the book and comes back
;;           at the new price with its remaining size, as a GTC taker: it may match, and it
;;           loses its time priority (even at the same price).
;;   Reduce  Order-Id, Size: takes up to Size off the resting order's remaining size, keeping
;;           its place in the queue; an order reduced to nothing is removed.
;; Cancel, Move and Reduce are refused to any account but the order's owner.
;;
;; Output (a JSON object in the Output string), for every accepted action:
;;   {"order":<Order-Id>,"fills":[{"maker":<id>,"taker":<id>,"price":<p>,"size":<s>},...],
;;    "rested":<size now resting>,"cancelled":<size taken off the book or not placed>}
;; Fills are in the order they happened. Reduce reports the size left resting as "rested".
;; A refused action changes nothing and is not an Error result (there is nothing to roll
;; back): Output is {"rejected":"<reason>"}, e.g. {"rejected":"duplicate Order-Id 42"}.
;;
;; When the process was spawned with the tag Notify-Fills=true, each fill also sends two
;; messages, first to the maker's account and then to the taker's, each with tags Action=Fill,
;; Order-Id, Price, Size and Side of the recipient's own order. Off (the default), the Output
;; alone reports fills: the perf workload measures the engine, not the outbox.
;;
;; Bounds, and what happens at each:
;;   ORDER_MAX     65536 resting orders. A GTC Place is refused "book full" while the book
;;                 holds that many (checked before matching; an IOC never rests, a Move frees
;;                 its own slot first).
;;   PRICE_MAX     65535 ticks; prices are 1..=PRICE_MAX.
;;   ACCOUNT_MAX   4096 accounts ever seen placing an order; a Place from a new account past
;;                 that is refused "account table full". Accounts are never forgotten.
;;   FILLS_MAX     512 fills per message: a taker stops matching there and its remainder is
;;                 cancelled (GTC too: resting it could cross the book). It keeps the outbox
;;                 under the node's 1024 entries (two messages per fill) and bounds the gas.
;; Order-Id is unique among resting orders only: an id may be reused once its order is gone.
;;
;; Data structures (all state at fixed addresses; the prelude's heap_above/heap_rebase keep
;; the heap above HEAP_BASE, so the state fills 0x10000..HEAP_BASE):
;;   0x0100 statics, i32 each:
;;            +0x00 best bid price (0 = no bids)     +0x04 best ask price (65536 = no asks)
;;            +0x08 free-list head (order slot)     +0x0C order slots ever used (high water)
;;            +0x10 resting buy orders              +0x14 resting sell orders
;;            +0x18 initialised (0 until the first message)
;;            +0x1C Notify-Fills (1 = on)           +0x20 accounts in the table
;;            +0x24 fills in this message
;;   0x0800, 0x1000  constants (tag names, values, Output fragments, reasons), 64 bytes each.
;;   0x4000  FILLS, the fill log of this message: FILLS_MAX records of 32 bytes
;;            +0 maker Order-Id (u64) +8 taker Order-Id (u64) +16 price +20 size
;;            +24 maker account +28 maker side (0 Buy, 1 Sell; the taker has the other).
;;   0x00010000 LEVELS: per side and price, the FIFO of resting orders as a doubly linked list
;;            of order slots: 8 bytes (head, tail; 0 = none) at LEVELS + ((side << 16) | price) * 8.
;;            2 sides x 65536 prices = 1 MiB. The best bid/ask are kept in the statics; when the
;;            best level empties, the next one is found by scanning prices away from the
;;            spread (cost: the gap to the next level; nothing when the side is empty).
;;   0x00110000 ORDERS: the order pool, 32-byte records; slot s (1..=ORDER_MAX, 0 = none) at
;;            ORDERS + s * 32: +0 Order-Id (u64) +8 next (the level's FIFO, or the free list)
;;            +12 prev +16 price +20 remaining size +24 account +28 side. Free slots form a
;;            list through +8; never-used slots come from the high-water mark, so no setup loop.
;;   0x00320000 IDS: Order-Id -> order slot, open addressing with linear probing, 131072 i32
;;            entries (0 = empty; load at most 1/2). Home = (id * 0x9E3779B97F4A7C15) >> 47
;;            (Fibonacci hashing); removal shifts the following entries back (no tombstones).
;;   0x003A0000 ACCOUNTS: 8192 slots of 48 bytes (the 43-byte id, then a used byte at +43),
;;            open addressing on a multiplicative hash of the id's bytes; an account's number
;;            is its slot (load at most 1/2).
;;   0x00400000 HEAP_BASE: msg, env and output live above it.
;; WAT has no named constants: each bound and address above appears as a literal below.
;;
;; To extend: another action is a function like $cancel, dispatched from $dispatch; another
;; order field is a word in the (full) 32-byte record, so widen it to 64 and double ORDERS'
;; span, moving IDS and ACCOUNTS up. Module fields only: compute::samples wraps it with
;; prelude.wat into one module.

  (data (i32.const 0x0800) "Order-Id\00")
  (data (i32.const 0x0840) "Side\00")
  (data (i32.const 0x0880) "Price\00")
  (data (i32.const 0x08C0) "Size\00")
  (data (i32.const 0x0900) "Type\00")
  (data (i32.const 0x0940) "Buy\00")
  (data (i32.const 0x0980) "Sell\00")
  (data (i32.const 0x09C0) "GTC\00")
  (data (i32.const 0x0A00) "IOC\00")
  (data (i32.const 0x0A40) "Place\00")
  (data (i32.const 0x0A80) "Cancel\00")
  (data (i32.const 0x0AC0) "Move\00")
  (data (i32.const 0x0B00) "Reduce\00")
  (data (i32.const 0x0B40) "Fill\00")
  (data (i32.const 0x0B80) "Notify-Fills\00")
  (data (i32.const 0x0BC0) "true\00")

  ;; Output fragments, escaped for the Output string.
  (data (i32.const 0x1000) "{\\\"rejected\\\":\\\"\00")
  (data (i32.const 0x1040) "\\\"}\00")
  (data (i32.const 0x1080) "{\\\"order\\\":\00")
  (data (i32.const 0x10C0) ",\\\"fills\\\":[\00")
  (data (i32.const 0x1100) "{\\\"maker\\\":\00")
  (data (i32.const 0x1140) ",\\\"taker\\\":\00")
  (data (i32.const 0x1180) ",\\\"price\\\":\00")
  (data (i32.const 0x11C0) ",\\\"size\\\":\00")
  (data (i32.const 0x1200) "],\\\"rested\\\":\00")
  (data (i32.const 0x1240) ",\\\"cancelled\\\":\00")
  (data (i32.const 0x1280) "}\00")

  ;; Reasons for a rejection.
  (data (i32.const 0x1400) "missing or unknown Action\00")
  (data (i32.const 0x1440) "From is not a 43-character id\00")
  (data (i32.const 0x1480) "missing or invalid Order-Id\00")
  (data (i32.const 0x14C0) "Side must be Buy or Sell\00")
  (data (i32.const 0x1500) "missing or invalid Price\00")
  (data (i32.const 0x1540) "Price \00")
  (data (i32.const 0x1580) " out of range 1..65535\00")
  (data (i32.const 0x15C0) "missing or invalid Size\00")
  (data (i32.const 0x1600) "Size \00")
  (data (i32.const 0x1640) " out of range 1..4294967295\00")
  (data (i32.const 0x1680) "Type must be GTC or IOC\00")
  (data (i32.const 0x16C0) "duplicate Order-Id \00")
  (data (i32.const 0x1700) "unknown Order-Id \00")
  (data (i32.const 0x1740) "Order-Id \00")
  (data (i32.const 0x1780) " belongs to another account\00")
  (data (i32.const 0x17C0) "book full: 65536 resting orders\00")
  (data (i32.const 0x1800) "account table full: 4096 accounts\00")
  (data (i32.const 0x1840) "\00")

  ;; ---- Order records, levels, best prices ----

  ;; Address of order slot $slot's record.
  (func $order (param $slot i32) (result i32)
    (i32.add (i32.const 0x00110000) (i32.shl (local.get $slot) (i32.const 5))))

  ;; Address of the (head, tail) pair of the level at $price on $side.
  (func $level (param $side i32) (param $price i32) (result i32)
    (i32.add (i32.const 0x00010000)
      (i32.shl
        (i32.or (i32.shl (local.get $side) (i32.const 16)) (local.get $price))
        (i32.const 3))))

  ;; Address of the count of resting orders on $side.
  (func $side_count (param $side i32) (result i32)
    (i32.add (i32.const 0x0110) (i32.shl (local.get $side) (i32.const 2))))

  ;; A free order slot, or 0 when ORDER_MAX orders rest.
  (func $order_alloc (result i32)
    (local $slot i32)
    (local.set $slot (i32.load (i32.const 0x0108)))
    (if (local.get $slot)
      (then
        (i32.store (i32.const 0x0108) (i32.load offset=8 (call $order (local.get $slot))))
        (return (local.get $slot))))
    (local.set $slot (i32.load (i32.const 0x010C)))
    (if (i32.ge_u (local.get $slot) (i32.const 65536))
      (then (return (i32.const 0))))
    (local.set $slot (i32.add (local.get $slot) (i32.const 1)))
    (i32.store (i32.const 0x010C) (local.get $slot))
    (local.get $slot))

  (func $order_free (param $slot i32)
    (i32.store offset=8 (call $order (local.get $slot)) (i32.load (i32.const 0x0108)))
    (i32.store (i32.const 0x0108) (local.get $slot)))

  (func $book_full (result i32)
    (i32.and
      (i32.eqz (i32.load (i32.const 0x0108)))
      (i32.ge_u (i32.load (i32.const 0x010C)) (i32.const 65536))))

  ;; Appends order $slot (price, side and size set) at the tail of its level.
  (func $rest (param $slot i32)
    (local $o i32)
    (local $side i32)
    (local $price i32)
    (local $level i32)
    (local $tail i32)
    (local.set $o (call $order (local.get $slot)))
    (local.set $side (i32.load offset=28 (local.get $o)))
    (local.set $price (i32.load offset=16 (local.get $o)))
    (local.set $level (call $level (local.get $side) (local.get $price)))
    (local.set $tail (i32.load offset=4 (local.get $level)))
    (i32.store offset=8 (local.get $o) (i32.const 0))
    (i32.store offset=12 (local.get $o) (local.get $tail))
    (if (local.get $tail)
      (then (i32.store offset=8 (call $order (local.get $tail)) (local.get $slot)))
      (else (i32.store (local.get $level) (local.get $slot))))
    (i32.store offset=4 (local.get $level) (local.get $slot))
    (i32.store (call $side_count (local.get $side))
      (i32.add (i32.load (call $side_count (local.get $side))) (i32.const 1)))
    (if (i32.eqz (local.get $side))
      (then
        (if (i32.gt_u (local.get $price) (i32.load (i32.const 0x0100)))
          (then (i32.store (i32.const 0x0100) (local.get $price)))))
      (else
        (if (i32.lt_u (local.get $price) (i32.load (i32.const 0x0104)))
          (then (i32.store (i32.const 0x0104) (local.get $price)))))))

  ;; Takes order $slot out of its level; moves the best price on when its level empties.
  (func $unlink (param $slot i32)
    (local $o i32)
    (local $side i32)
    (local $price i32)
    (local $level i32)
    (local $next i32)
    (local $prev i32)
    (local $p i32)
    (local.set $o (call $order (local.get $slot)))
    (local.set $side (i32.load offset=28 (local.get $o)))
    (local.set $price (i32.load offset=16 (local.get $o)))
    (local.set $level (call $level (local.get $side) (local.get $price)))
    (local.set $next (i32.load offset=8 (local.get $o)))
    (local.set $prev (i32.load offset=12 (local.get $o)))
    (if (local.get $prev)
      (then (i32.store offset=8 (call $order (local.get $prev)) (local.get $next)))
      (else (i32.store (local.get $level) (local.get $next))))
    (if (local.get $next)
      (then (i32.store offset=12 (call $order (local.get $next)) (local.get $prev)))
      (else (i32.store offset=4 (local.get $level) (local.get $prev))))
    (i32.store (call $side_count (local.get $side))
      (i32.sub (i32.load (call $side_count (local.get $side))) (i32.const 1)))
    (if (i32.load (local.get $level))
      (then (return)))
    ;; The level is empty. If it was the best, scan away from the spread for the next one;
    ;; a side with no orders left has no best price, and any other scan ends at an order.
    (if (i32.eqz (local.get $side))
      (then
        (if (i32.ne (local.get $price) (i32.load (i32.const 0x0100)))
          (then (return)))
        (if (i32.eqz (i32.load (call $side_count (i32.const 0))))
          (then
            (i32.store (i32.const 0x0100) (i32.const 0))
            (return)))
        (local.set $p (local.get $level))
        (loop $down
          (local.set $p (i32.sub (local.get $p) (i32.const 8)))
          (br_if $down (i32.eqz (i32.load (local.get $p)))))
        (i32.store (i32.const 0x0100)
          (i32.shr_u (i32.sub (local.get $p) (i32.const 0x00010000)) (i32.const 3))))
      (else
        (if (i32.ne (local.get $price) (i32.load (i32.const 0x0104)))
          (then (return)))
        (if (i32.eqz (i32.load (call $side_count (i32.const 1))))
          (then
            (i32.store (i32.const 0x0104) (i32.const 65536))
            (return)))
        (local.set $p (local.get $level))
        (loop $up
          (local.set $p (i32.add (local.get $p) (i32.const 8)))
          (br_if $up (i32.eqz (i32.load (local.get $p)))))
        (i32.store (i32.const 0x0104)
          (i32.and
            (i32.shr_u (i32.sub (local.get $p) (i32.const 0x00010000)) (i32.const 3))
            (i32.const 0xFFFF))))))

  ;; ---- Order-Id -> slot ----

  (func $id_home (param $id i64) (result i32)
    (i32.wrap_i64
      (i64.shr_u (i64.mul (local.get $id) (i64.const 0x9E3779B97F4A7C15)) (i64.const 47))))
  (func $id_entry (param $i i32) (result i32)
    (i32.add (i32.const 0x00320000) (i32.shl (local.get $i) (i32.const 2))))

  ;; The slot of the resting order $id, or 0.
  (func $id_find (param $id i64) (result i32)
    (local $i i32)
    (local $slot i32)
    (local.set $i (call $id_home (local.get $id)))
    (loop $probe
      (local.set $slot (i32.load (call $id_entry (local.get $i))))
      (if (i32.eqz (local.get $slot))
        (then (return (i32.const 0))))
      (if (i64.eq (i64.load (call $order (local.get $slot))) (local.get $id))
        (then (return (local.get $slot))))
      (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (i32.const 131071)))
      (br $probe))
    unreachable)

  ;; Enters order $slot under its Order-Id, which must be absent. At most ORDER_MAX entries in
  ;; twice as many places: there is always an empty one.
  (func $id_insert (param $slot i32)
    (local $i i32)
    (local.set $i (call $id_home (i64.load (call $order (local.get $slot)))))
    (loop $probe
      (if (i32.load (call $id_entry (local.get $i)))
        (then
          (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (i32.const 131071)))
          (br $probe))))
    (i32.store (call $id_entry (local.get $i)) (local.get $slot)))

  ;; Removes the entry of $id, which must be present, shifting later entries of its run back
  ;; into the hole unless their home lies cyclically in (hole, their place].
  (func $id_remove (param $id i64)
    (local $i i32)
    (local $j i32)
    (local $slot i32)
    (local $home i32)
    (local.set $i (call $id_home (local.get $id)))
    (loop $find
      (local.set $slot (i32.load (call $id_entry (local.get $i))))
      (if (i32.eqz (local.get $slot))
        (then unreachable))
      (if (i64.ne (i64.load (call $order (local.get $slot))) (local.get $id))
        (then
          (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (i32.const 131071)))
          (br $find))))
    (local.set $j (local.get $i))
    (block $done
      (loop $shift
        (local.set $j (i32.and (i32.add (local.get $j) (i32.const 1)) (i32.const 131071)))
        (local.set $slot (i32.load (call $id_entry (local.get $j))))
        (br_if $done (i32.eqz (local.get $slot)))
        (local.set $home (call $id_home (i64.load (call $order (local.get $slot)))))
        ;; home in (i, j] cyclically <=> (home - i - 1) mod size < (j - i) mod size.
        (if (i32.ge_u
              (i32.and (i32.sub (i32.sub (local.get $home) (local.get $i)) (i32.const 1)) (i32.const 131071))
              (i32.and (i32.sub (local.get $j) (local.get $i)) (i32.const 131071)))
          (then
            (i32.store (call $id_entry (local.get $i)) (local.get $slot))
            (local.set $i (local.get $j))))
        (br $shift)))
    (i32.store (call $id_entry (local.get $i)) (i32.const 0)))

  ;; ---- Accounts ----

  (func $account_addr (param $account i32) (result i32)
    (i32.add (i32.const 0x003A0000) (i32.mul (local.get $account) (i32.const 48))))

  ;; A home slot for the 43-byte id at $p, from six overlapping 8-byte words.
  (func $account_home (param $p i32) (result i32)
    (local $h i64)
    (local.set $h (i64.load (local.get $p)))
    (local.set $h (i64.xor (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.load offset=8 (local.get $p))))
    (local.set $h (i64.xor (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.load offset=16 (local.get $p))))
    (local.set $h (i64.xor (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.load offset=24 (local.get $p))))
    (local.set $h (i64.xor (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.load offset=32 (local.get $p))))
    (local.set $h (i64.xor (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.load offset=35 (local.get $p))))
    (i32.wrap_i64 (i64.shr_u (i64.mul (local.get $h) (i64.const 0x9E3779B97F4A7C15)) (i64.const 51))))

  ;; Whether the 43 bytes at $a and at $b are equal.
  (func $id43_eq (param $a i32) (param $b i32) (result i32)
    (i32.and
      (i32.and
        (i32.and
          (i64.eq (i64.load (local.get $a)) (i64.load (local.get $b)))
          (i64.eq (i64.load offset=8 (local.get $a)) (i64.load offset=8 (local.get $b))))
        (i32.and
          (i64.eq (i64.load offset=16 (local.get $a)) (i64.load offset=16 (local.get $b)))
          (i64.eq (i64.load offset=24 (local.get $a)) (i64.load offset=24 (local.get $b)))))
      (i32.and
        (i64.eq (i64.load offset=32 (local.get $a)) (i64.load offset=32 (local.get $b)))
        (i64.eq (i64.load offset=35 (local.get $a)) (i64.load offset=35 (local.get $b))))))

  ;; The number of the account whose 43-byte id is at $p; when it is new and $add is set, it
  ;; is added. -1 when it is absent and not added, or the table holds ACCOUNT_MAX accounts.
  (func $account (param $p i32) (param $add i32) (result i32)
    (local $i i32)
    (local $a i32)
    (local.set $i (call $account_home (local.get $p)))
    (loop $probe
      (local.set $a (call $account_addr (local.get $i)))
      (if (i32.eqz (i32.load8_u offset=43 (local.get $a)))
        (then
          (if (i32.or
                (i32.eqz (local.get $add))
                (i32.ge_u (i32.load (i32.const 0x0120)) (i32.const 4096)))
            (then (return (i32.const -1))))
          (memory.copy (local.get $a) (local.get $p) (i32.const 43))
          (i32.store8 offset=43 (local.get $a) (i32.const 1))
          (i32.store (i32.const 0x0120) (i32.add (i32.load (i32.const 0x0120)) (i32.const 1)))
          (return (local.get $i))))
      (if (call $id43_eq (local.get $a) (local.get $p))
        (then (return (local.get $i))))
      (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (i32.const 8191)))
      (br $probe))
    unreachable)

  ;; ---- Matching ----

  ;; Matches a taker (Order-Id $taker, $side, limit $price, $size) against the other side:
  ;; best price first, FIFO within a price, at the maker's price, until it is filled, no
  ;; price crosses, or the message has FILLS_MAX fills. Fills go to the fill log; filled
  ;; makers leave the book. Returns the taker's unfilled size.
  (func $match (param $taker i64) (param $side i32) (param $price i32) (param $size i32) (result i32)
    (local $n i32)
    (local $best i32)
    (local $maker i32)
    (local $m i32)
    (local $left i32)
    (local $fill i32)
    (local $log i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $size)))
        (local.set $n (i32.load (i32.const 0x0124)))
        (br_if $done (i32.ge_u (local.get $n) (i32.const 512)))
        ;; No asks is 65536 and no bids is 0: neither crosses a price in 1..=65535.
        (if (i32.eqz (local.get $side))
          (then
            (local.set $best (i32.load (i32.const 0x0104)))
            (br_if $done (i32.gt_u (local.get $best) (local.get $price))))
          (else
            (local.set $best (i32.load (i32.const 0x0100)))
            (br_if $done (i32.lt_u (local.get $best) (local.get $price)))))
        (local.set $maker
          (i32.load (call $level (i32.xor (local.get $side) (i32.const 1)) (local.get $best))))
        (local.set $m (call $order (local.get $maker)))
        (local.set $left (i32.load offset=20 (local.get $m)))
        (local.set $fill
          (select (local.get $size) (local.get $left) (i32.lt_u (local.get $size) (local.get $left))))
        (local.set $log (i32.add (i32.const 0x4000) (i32.shl (local.get $n) (i32.const 5))))
        (i64.store (local.get $log) (i64.load (local.get $m)))
        (i64.store offset=8 (local.get $log) (local.get $taker))
        (i32.store offset=16 (local.get $log) (local.get $best))
        (i32.store offset=20 (local.get $log) (local.get $fill))
        (i32.store offset=24 (local.get $log) (i32.load offset=24 (local.get $m)))
        (i32.store offset=28 (local.get $log) (i32.load offset=28 (local.get $m)))
        (i32.store (i32.const 0x0124) (i32.add (local.get $n) (i32.const 1)))
        (local.set $size (i32.sub (local.get $size) (local.get $fill)))
        (local.set $left (i32.sub (local.get $left) (local.get $fill)))
        (i32.store offset=20 (local.get $m) (local.get $left))
        (if (i32.eqz (local.get $left))
          (then
            (call $unlink (local.get $maker))
            (call $id_remove (i64.load (local.get $m)))
            (call $order_free (local.get $maker))))
        (br $next)))
    (local.get $size))

  ;; ---- Results ----

  ;; Output {"rejected":"<prefix><number, when $has_n><suffix>"}, no messages.
  (func $reject (param $prefix i32) (param $has_n i32) (param $n i64) (param $suffix i32) (result i32)
    (call $respond_begin)
    (call $out_cstr (i32.const 0x1000))
    (call $out_cstr (local.get $prefix))
    (if (local.get $has_n)
      (then (call $out_u64 (local.get $n))))
    (call $out_cstr (local.get $suffix))
    (call $out_cstr (i32.const 0x1040))
    (call $respond_messages)
    (call $respond_spawns)
    (call $respond_end))
  (func $reject_plain (param $reason i32) (result i32)
    (call $reject (local.get $reason) (i32.const 0) (i64.const 0) (i32.const 0x1840)))

  (func $side_name (param $side i32) (result i32)
    (select (i32.const 0x0980) (i32.const 0x0940) (local.get $side)))

  ;; One Fill message to $account about its order $id.
  (func $fill_message (param $account i32) (param $id i64) (param $side i32) (param $price i32) (param $size i32)
    (call $message_begin (call $account_addr (local.get $account)) (i32.const 43))
    (call $tag_out_cstr (i32.const 0x0740) (i32.const 0x0B40))
    (call $out_comma)
    (call $tag_out_u64 (i32.const 0x0800) (local.get $id))
    (call $out_comma)
    (call $tag_out_u64 (i32.const 0x0880) (i64.extend_i32_u (local.get $price)))
    (call $out_comma)
    (call $tag_out_u64 (i32.const 0x08C0) (i64.extend_i32_u (local.get $size)))
    (call $out_comma)
    (call $tag_out_cstr (i32.const 0x0840) (call $side_name (local.get $side)))
    (call $message_end))

  ;; The result of an accepted action on order $id: the Output object from the fill log and
  ;; the sizes, then (Notify-Fills) two messages per fill; $taker_account owns order $id.
  (func $accepted (param $id i64) (param $taker_account i32) (param $rested i32) (param $cancelled i32) (result i32)
    (local $n i32)
    (local $i i32)
    (local $log i32)
    (local.set $n (i32.load (i32.const 0x0124)))
    (call $respond_begin)
    (call $out_cstr (i32.const 0x1080))
    (call $out_u64 (local.get $id))
    (call $out_cstr (i32.const 0x10C0))
    (block $done
      (loop $fills
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $log (i32.add (i32.const 0x4000) (i32.shl (local.get $i) (i32.const 5))))
        (if (local.get $i)
          (then (call $out_comma)))
        (call $out_cstr (i32.const 0x1100))
        (call $out_u64 (i64.load (local.get $log)))
        (call $out_cstr (i32.const 0x1140))
        (call $out_u64 (i64.load offset=8 (local.get $log)))
        (call $out_cstr (i32.const 0x1180))
        (call $out_u64 (i64.load32_u offset=16 (local.get $log)))
        (call $out_cstr (i32.const 0x11C0))
        (call $out_u64 (i64.load32_u offset=20 (local.get $log)))
        (call $out_cstr (i32.const 0x1280))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $fills)))
    (call $out_cstr (i32.const 0x1200))
    (call $out_u64 (i64.extend_i32_u (local.get $rested)))
    (call $out_cstr (i32.const 0x1240))
    (call $out_u64 (i64.extend_i32_u (local.get $cancelled)))
    (call $out_cstr (i32.const 0x1280))
    (call $respond_messages)
    (if (i32.load (i32.const 0x011C))
      (then
        (local.set $i (i32.const 0))
        (block $done
          (loop $messages
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $log (i32.add (i32.const 0x4000) (i32.shl (local.get $i) (i32.const 5))))
            (if (local.get $i)
              (then (call $out_comma)))
            (call $fill_message
              (i32.load offset=24 (local.get $log))
              (i64.load (local.get $log))
              (i32.load offset=28 (local.get $log))
              (i32.load offset=16 (local.get $log))
              (i32.load offset=20 (local.get $log)))
            (call $out_comma)
            (call $fill_message
              (local.get $taker_account)
              (i64.load offset=8 (local.get $log))
              (i32.xor (i32.load offset=28 (local.get $log)) (i32.const 1))
              (i32.load offset=16 (local.get $log))
              (i32.load offset=20 (local.get $log)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $messages)))))
    (call $respond_spawns)
    (call $respond_end))

  ;; ---- Tags ----

  ;; The decimal u64 in tag $name: (value, 1), or (0, 0) when it is absent or not decimal.
  (func $tag_u64 (param $name i32) (result i64 i32)
    (call $tag (local.get $name))
    (call $parse_u64))

  ;; The price in tag Price as (price, 0), or (0, reason's result) when it is refused.
  (func $tag_price (result i32 i32)
    (local $v i64)
    (local $ok i32)
    (call $tag_u64 (i32.const 0x0880))
    (local.set $ok)
    (local.set $v)
    (if (i32.eqz (local.get $ok))
      (then (return (i32.const 0) (call $reject_plain (i32.const 0x1500)))))
    (if (i32.or (i64.eqz (local.get $v)) (i64.gt_u (local.get $v) (i64.const 65535)))
      (then (return (i32.const 0) (call $reject (i32.const 0x1540) (i32.const 1) (local.get $v) (i32.const 0x1580)))))
    (i32.wrap_i64 (local.get $v))
    (i32.const 0))

  ;; The size in tag Size as (size, 0), or (0, reason's result) when it is refused.
  (func $tag_size (result i32 i32)
    (local $v i64)
    (local $ok i32)
    (call $tag_u64 (i32.const 0x08C0))
    (local.set $ok)
    (local.set $v)
    (if (i32.eqz (local.get $ok))
      (then (return (i32.const 0) (call $reject_plain (i32.const 0x15C0)))))
    (if (i32.or (i64.eqz (local.get $v)) (i64.gt_u (local.get $v) (i64.const 0xFFFFFFFF)))
      (then (return (i32.const 0) (call $reject (i32.const 0x1600) (i32.const 1) (local.get $v) (i32.const 0x1640)))))
    (i32.wrap_i64 (local.get $v))
    (i32.const 0))

  ;; The resting order named by tag Order-Id and owned by the account at $from, as
  ;; (Order-Id, slot, 0), or (0, 0, reason's result) when it is refused.
  (func $owned_order (param $from i32) (result i64 i32 i32)
    (local $id i64)
    (local $ok i32)
    (local $slot i32)
    (call $tag_u64 (i32.const 0x0800))
    (local.set $ok)
    (local.set $id)
    (if (i32.eqz (local.get $ok))
      (then (return (i64.const 0) (i32.const 0) (call $reject_plain (i32.const 0x1480)))))
    (local.set $slot (call $id_find (local.get $id)))
    (if (i32.eqz (local.get $slot))
      (then (return (i64.const 0) (i32.const 0)
        (call $reject (i32.const 0x1700) (i32.const 1) (local.get $id) (i32.const 0x1840)))))
    (if (i32.ne
          (call $account (local.get $from) (i32.const 0))
          (i32.load offset=24 (call $order (local.get $slot))))
      (then (return (i64.const 0) (i32.const 0)
        (call $reject (i32.const 0x1740) (i32.const 1) (local.get $id) (i32.const 0x1780)))))
    (local.get $id)
    (local.get $slot)
    (i32.const 0))

  ;; ---- Actions ----

  (func $place (param $from i32) (result i32)
    (local $id i64)
    (local $ok i32)
    (local $v i32)
    (local $vn i32)
    (local $side i32)
    (local $price i32)
    (local $size i32)
    (local $ioc i32)
    (local $refused i32)
    (local $account i32)
    (local $left i32)
    (local $slot i32)
    (local $o i32)
    (call $tag_u64 (i32.const 0x0800))
    (local.set $ok)
    (local.set $id)
    (if (i32.eqz (local.get $ok))
      (then (return (call $reject_plain (i32.const 0x1480)))))
    (call $tag (i32.const 0x0840))
    (local.set $vn)
    (local.set $v)
    (if (call $eq (local.get $v) (local.get $vn) (i32.const 0x0940))
      (then (local.set $side (i32.const 0)))
      (else
        (if (call $eq (local.get $v) (local.get $vn) (i32.const 0x0980))
          (then (local.set $side (i32.const 1)))
          (else (return (call $reject_plain (i32.const 0x14C0)))))))
    (call $tag_price)
    (local.set $refused)
    (local.set $price)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (call $tag_size)
    (local.set $refused)
    (local.set $size)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (call $tag (i32.const 0x0900))
    (local.set $vn)
    (local.set $v)
    (if (call $eq (local.get $v) (local.get $vn) (i32.const 0x09C0))
      (then (local.set $ioc (i32.const 0)))
      (else
        (if (call $eq (local.get $v) (local.get $vn) (i32.const 0x0A00))
          (then (local.set $ioc (i32.const 1)))
          (else (return (call $reject_plain (i32.const 0x1680)))))))
    (if (call $id_find (local.get $id))
      (then (return (call $reject (i32.const 0x16C0) (i32.const 1) (local.get $id) (i32.const 0x1840)))))
    (local.set $account (call $account (local.get $from) (i32.const 1)))
    (if (i32.eq (local.get $account) (i32.const -1))
      (then (return (call $reject_plain (i32.const 0x1800)))))
    (if (i32.and (i32.eqz (local.get $ioc)) (call $book_full))
      (then (return (call $reject_plain (i32.const 0x17C0)))))

    (local.set $left (call $match (local.get $id) (local.get $side) (local.get $price) (local.get $size)))
    (if (i32.or
          (i32.eqz (local.get $left))
          (i32.or (local.get $ioc) (i32.ge_u (i32.load (i32.const 0x0124)) (i32.const 512))))
      (then (return (call $accepted (local.get $id) (local.get $account) (i32.const 0) (local.get $left)))))
    (local.set $slot (call $order_alloc))
    (local.set $o (call $order (local.get $slot)))
    (i64.store (local.get $o) (local.get $id))
    (i32.store offset=16 (local.get $o) (local.get $price))
    (i32.store offset=20 (local.get $o) (local.get $left))
    (i32.store offset=24 (local.get $o) (local.get $account))
    (i32.store offset=28 (local.get $o) (local.get $side))
    (call $id_insert (local.get $slot))
    (call $rest (local.get $slot))
    (call $accepted (local.get $id) (local.get $account) (local.get $left) (i32.const 0)))

  (func $cancel (param $from i32) (result i32)
    (local $id i64)
    (local $slot i32)
    (local $refused i32)
    (local $o i32)
    (local $account i32)
    (local $left i32)
    (call $owned_order (local.get $from))
    (local.set $refused)
    (local.set $slot)
    (local.set $id)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (local.set $o (call $order (local.get $slot)))
    (local.set $account (i32.load offset=24 (local.get $o)))
    (local.set $left (i32.load offset=20 (local.get $o)))
    (call $unlink (local.get $slot))
    (call $id_remove (local.get $id))
    (call $order_free (local.get $slot))
    (call $accepted (local.get $id) (local.get $account) (i32.const 0) (local.get $left)))

  (func $move (param $from i32) (result i32)
    (local $ok i32)
    (local $id i64)
    (local $slot i32)
    (local $refused i32)
    (local $price i32)
    (local $o i32)
    (local $left i32)
    ;; Order-Id is checked before Price, as for the other actions.
    (call $tag_u64 (i32.const 0x0800))
    (local.set $ok)
    (drop)
    (if (i32.eqz (local.get $ok))
      (then (return (call $reject_plain (i32.const 0x1480)))))
    (call $tag_price)
    (local.set $refused)
    (local.set $price)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (call $owned_order (local.get $from))
    (local.set $refused)
    (local.set $slot)
    (local.set $id)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (local.set $o (call $order (local.get $slot)))
    (call $unlink (local.get $slot))
    (i32.store offset=16 (local.get $o) (local.get $price))
    (local.set $left
      (call $match (local.get $id) (i32.load offset=28 (local.get $o)) (local.get $price)
        (i32.load offset=20 (local.get $o))))
    (if (i32.or
          (i32.eqz (local.get $left))
          (i32.ge_u (i32.load (i32.const 0x0124)) (i32.const 512)))
      (then
        (call $id_remove (local.get $id))
        (call $order_free (local.get $slot))
        (return (call $accepted (local.get $id) (i32.load offset=24 (local.get $o)) (i32.const 0)
          (local.get $left)))))
    (i32.store offset=20 (local.get $o) (local.get $left))
    (call $rest (local.get $slot))
    (call $accepted (local.get $id) (i32.load offset=24 (local.get $o)) (local.get $left) (i32.const 0)))

  (func $reduce (param $from i32) (result i32)
    (local $ok i32)
    (local $id i64)
    (local $slot i32)
    (local $refused i32)
    (local $size i32)
    (local $o i32)
    (local $left i32)
    (call $tag_u64 (i32.const 0x0800))
    (local.set $ok)
    (drop)
    (if (i32.eqz (local.get $ok))
      (then (return (call $reject_plain (i32.const 0x1480)))))
    (call $tag_size)
    (local.set $refused)
    (local.set $size)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (call $owned_order (local.get $from))
    (local.set $refused)
    (local.set $slot)
    (local.set $id)
    (if (local.get $refused)
      (then (return (local.get $refused))))
    (local.set $o (call $order (local.get $slot)))
    (local.set $left (i32.load offset=20 (local.get $o)))
    (if (i32.gt_u (local.get $size) (local.get $left))
      (then (local.set $size (local.get $left))))
    (local.set $left (i32.sub (local.get $left) (local.get $size)))
    (i32.store offset=20 (local.get $o) (local.get $left))
    (if (i32.eqz (local.get $left))
      (then
        (call $unlink (local.get $slot))
        (call $id_remove (local.get $id))
        (call $order_free (local.get $slot))))
    (call $accepted (local.get $id) (i32.load offset=24 (local.get $o)) (local.get $left) (local.get $size)))

  ;; ---- Entry ----

  ;; Sets up a fresh book on the first message: no asks, and Notify-Fills from the env.
  (func $init
    (local $v i32)
    (local $vn i32)
    (if (i32.load (i32.const 0x0118))
      (then (return)))
    (i32.store (i32.const 0x0104) (i32.const 65536))
    (call $process_tag (i32.const 0x0B80))
    (local.set $vn)
    (local.set $v)
    (i32.store (i32.const 0x011C) (call $eq (local.get $v) (local.get $vn) (i32.const 0x0BC0)))
    (i32.store (i32.const 0x0118) (i32.const 1)))

  (func $dispatch (result i32)
    (local $action i32)
    (local $action_len i32)
    (local $kind i32)
    (local $from i32)
    (local $from_len i32)
    (call $tag (i32.const 0x0740))
    (local.set $action_len)
    (local.set $action)
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0A40))
      (then (local.set $kind (i32.const 1))))
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0A80))
      (then (local.set $kind (i32.const 2))))
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0AC0))
      (then (local.set $kind (i32.const 3))))
    (if (call $eq (local.get $action) (local.get $action_len) (i32.const 0x0B00))
      (then (local.set $kind (i32.const 4))))
    (if (i32.eqz (local.get $kind))
      (then (return (call $reject_plain (i32.const 0x1400)))))
    (call $msg_value (i32.const 0x0780))
    (local.set $from_len)
    (local.set $from)
    (if (i32.ne (local.get $from_len) (i32.const 43))
      (then (return (call $reject_plain (i32.const 0x1440)))))
    (if (i32.eq (local.get $kind) (i32.const 1))
      (then (return (call $place (local.get $from)))))
    (if (i32.eq (local.get $kind) (i32.const 2))
      (then (return (call $cancel (local.get $from)))))
    (if (i32.eq (local.get $kind) (i32.const 3))
      (then (return (call $move (local.get $from)))))
    (call $reduce (local.get $from)))

  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $result i32)
    (call $begin (local.get $msg) (local.get $env))
    (call $heap_above (i32.const 0x00400000))
    (call $init)
    (i32.store (i32.const 0x0124) (i32.const 0))
    (local.set $result (call $dispatch))
    (call $heap_rebase (i32.const 0x00400000))
    (local.get $result))
