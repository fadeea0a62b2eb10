package buffer

import (
	"fmt"
	"time"
)

// Tx collects the writes of one atomic update (see Store.Update). It holds no Badger
// transaction: the writer goroutine applies the collected writes in one.
type Tx struct {
	ops []op
	err error
}

type opKind uint8

const (
	opAppend opKind = iota
	opSet
	opDelete
)

type op struct {
	kind  opKind
	log   string // opAppend
	key   []byte // opSet, opDelete
	value []byte
	ttl   time.Duration // opSet: Badger's TTL of the key (0: none)
}

// Append adds value at the end of log; its sequence number is assigned at commit.
func (tx *Tx) Append(log string, value []byte) {
	if err := checkName(log); err != nil {
		tx.fail(err)
		return
	}
	tx.ops = append(tx.ops, op{kind: opAppend, log: log, value: value})
}

// Put sets key of the state KV (read back with Store.Get).
func (tx *Tx) Put(key string, value []byte) {
	tx.ops = append(tx.ops, op{kind: opSet, key: stateKey(key), value: value})
}

// Delete removes key from the state KV.
func (tx *Tx) Delete(key string) {
	tx.ops = append(tx.ops, op{kind: opDelete, key: stateKey(key)})
}

// SetCursor records next as consumer's position in log.
func (tx *Tx) SetCursor(log, consumer string, next uint64) {
	if err := checkName(log); err != nil {
		tx.fail(err)
		return
	}
	if consumer == "" {
		tx.fail(fmt.Errorf("buffer: empty consumer name for log %q", log))
		return
	}
	tx.ops = append(tx.ops, op{kind: opSet, key: cursorKey(log, consumer), value: u64(next)})
}

func (tx *Tx) fail(err error) {
	if tx.err == nil {
		tx.err = err
	}
}
