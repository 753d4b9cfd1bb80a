//go:build linux

package queue

import (
	"syscall"
	"unsafe"
)

// dropMappedPages tells the kernel the process no longer needs its mapping
// of size bytes at addr (madvise MADV_DONTNEED). bbolt maps the database
// read-only and shared and writes through the file, so this drops only the
// page-table entries: the data stays in the page cache, and the next read
// faults it back in. Without it every page the copy-on-write B+tree ever
// placed anywhere in the file stays counted in the daemon's RSS.
func dropMappedPages(addr uintptr, size int64) error {
	if size <= 0 {
		return nil
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(size), syscall.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}

// dropMappedBytes drops the process's mapping of the pages that hold b, a
// slice of the database mapping that was just copied out (see
// dropMappedPages). Call it only inside the read transaction b came from.
func dropMappedBytes(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	pageSize := uintptr(syscall.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	end := start + uintptr(len(b))
	start &^= pageSize - 1
	return dropMappedPages(start, int64(end-start))
}
