package buffer

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// ScanState calls fn for every key of the state KV that starts with prefix, in key order
// (pipelines reload their windows at start). The value passed to fn is only valid during
// the call; fn may stop the scan by returning ErrStop.
func (s *Store) ScanState(prefix string, fn func(key string, value []byte) error) error {
	n := len(stateKey(""))
	err := s.scan(stateKey(prefix), func(k, v []byte) error { return fn(string(k[n:]), v) })
	if err != nil {
		return fmt.Errorf("buffer: scan state %q: %w", prefix, err)
	}
	return nil
}

// scan calls fn for every key under prefix, in key order, with its value; both are only
// valid during the call. fn may stop the scan by returning ErrStop.
func (s *Store) scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error { return fn(item.Key(), v) })
			if errors.Is(err, ErrStop) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// scanInSteps is scan for long prefixes (the dedup index: millions of keys), in read
// transactions of Options.scanSteps keys each: a read transaction holds the tables it
// started with (their files stay on disk, outside the budget's sight, until it ends) and
// keeps compactions from discarding older versions. Keys written during the scan may or
// may not be seen.
func (s *Store) scanInSteps(prefix []byte, fn func(key, value []byte) error) error {
	steps := s.opts.scanSteps
	var after []byte // the last key handed to fn: the next step starts there
	for {
		n := 0
		var last []byte
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(keysOnly(prefix))
			defer it.Close()
			if after == nil {
				it.Rewind()
			} else {
				it.Seek(after)
			}
			for ; it.Valid() && n < steps; it.Next() {
				item := it.Item()
				if after != nil && bytes.Equal(item.Key(), after) {
					continue
				}
				if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
					return err
				}
				last = item.KeyCopy(last)
				n++
			}
			return nil
		})
		if errors.Is(err, ErrStop) {
			return nil
		}
		if err != nil || n < steps {
			return err
		}
		after = last
	}
}

// keysOnly are iterator options over the keys under prefix, without fetching values.
func keysOnly(prefix []byte) badger.IteratorOptions {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.PrefetchValues = false
	return o
}
