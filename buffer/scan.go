package buffer

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// ScanState calls fn for every key of the state KV that starts with prefix, in key order
// (pipelines reload their windows at start). The value passed to fn is only valid during
// the call.
func (s *Store) ScanState(prefix string, fn func(key string, value []byte) error) error {
	p := stateKey(prefix)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = p
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := string(item.Key()[len(stateKey("")):])
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: scan state %q: %w", prefix, err)
	}
	return nil
}

// keysOnly are iterator options over the keys under prefix, without fetching values.
func keysOnly(prefix []byte) badger.IteratorOptions {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.PrefetchValues = false
	return o
}
