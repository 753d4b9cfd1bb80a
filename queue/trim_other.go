//go:build !linux

package queue

// dropMappedPages does nothing where madvise is not wired up.
func dropMappedPages(addr uintptr, size int64) error { return nil }

// dropMappedBytes does nothing where madvise is not wired up.
func dropMappedBytes(b []byte) error { return nil }
