//go:build linux

package queue

import "syscall"

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
