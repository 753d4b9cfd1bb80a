package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// probeTimeout bounds the check whether a daemon answers on an existing
// socket.
const probeTimeout = 2 * time.Second

// Listen creates the admin unix socket at path with mode 0600, creating its
// parent directory with mode 0700 if needed. An existing socket file is
// removed only when nothing answers on it (left behind by a daemon that
// died); if a live daemon answers, Listen fails with "another relay is
// already running on PATH". A path that exists but is not a socket is never
// removed. Closing the listener removes the socket file.
//
// The socket is chmod-ed right after it is bound; the 0700 parent
// directory (the data directory, normally) is what keeps others out in
// between.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("admin socket: empty path")
	}
	if err := checkPathLen(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: create directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// maxSocketPath is the longest path a Linux unix socket address holds
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// checkPathLen rejects socket paths the kernel cannot bind or connect to,
// which it would otherwise report only as "invalid argument".
func checkPathLen(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("admin socket path %s is too long (%d bytes, unix sockets allow %d): configure a shorter [admin] socket or data_dir", path, len(path), maxSocketPath)
	}
	return nil
}

// removeStale removes a socket at path that no process listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin socket: %s exists and is not a socket; remove it or configure another [admin] socket", path)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another relay is already running on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// Not provably stale (for example permission denied): leave it.
		return fmt.Errorf("admin socket: probing existing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin socket: remove stale %s: %w", path, err)
	}
	return nil
}
