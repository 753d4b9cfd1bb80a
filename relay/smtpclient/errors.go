package smtpclient

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap them with context;
// test with errors.Is.
var (
	// ErrNoSTARTTLS is returned by StartTLS when the server did not
	// advertise STARTTLS; no command was sent (RFC 3207, checklist TLS03).
	ErrNoSTARTTLS = errors.New("smtpclient: server does not offer STARTTLS")
	// ErrNeedsSMTPUTF8 is returned by Send, before anything is sent, when the
	// message needs SMTPUTF8 (RFC 6531 §3.4) and the server does not offer it.
	ErrNeedsSMTPUTF8 = errors.New("smtpclient: message needs SMTPUTF8, which the server does not offer")
	// ErrNeedsREQUIRETLS is returned by Send, before anything is sent, when
	// the message carries REQUIRETLS (RFC 8689) and the server does not
	// offer it over the current TLS connection.
	ErrNeedsREQUIRETLS = errors.New("smtpclient: message needs REQUIRETLS, which the server does not offer over TLS")
	// ErrTooBig is returned by Send, before anything is sent, when the
	// message is larger than the limit the server advertised with SIZE
	// (RFC 1870).
	ErrTooBig = errors.New("smtpclient: message exceeds the server's SIZE limit")
	// ErrLineTooLong is returned, before anything is sent, when a command
	// line would exceed the limits of RFC 5321 §4.5.3.1.4 as extended by the
	// parameters in use (RFC 1870, RFC 3461 §4, RFC 6531, RFC 8689).
	// Nothing is truncated.
	ErrLineTooLong = errors.New("smtpclient: command line too long")
	// ErrInvalidArgument is returned, before anything is sent, for caller
	// input that cannot be put on the wire: control characters in an
	// address or host name, unknown BODY, RET or NOTIFY values, a malformed
	// ORCPT, or no recipients.
	ErrInvalidArgument = errors.New("smtpclient: invalid argument")
	// ErrProtocol wraps violations of the SMTP reply syntax by the server,
	// including replies that exceed the line-length or line-count limits.
	// The connection is unusable afterwards.
	ErrProtocol = errors.New("smtpclient: SMTP protocol violation by server")
	// ErrClosed is returned when the client is used after Close, Quit, or
	// an error that left the connection in an unknown state.
	ErrClosed = errors.New("smtpclient: connection closed or unusable")
)

// TLSError reports a failed TLS handshake after STARTTLS. The connection is
// unusable afterwards and must be closed by the caller.
type TLSError struct {
	// Err is the error from crypto/tls (for example an x509 verification
	// error or a tls.AlertError).
	Err error
}

// Error describes the handshake failure.
func (e *TLSError) Error() string { return fmt.Sprintf("TLS handshake after STARTTLS: %v", e.Err) }

// Unwrap returns the crypto/tls error.
func (e *TLSError) Unwrap() error { return e.Err }
