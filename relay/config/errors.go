package config

import (
	"fmt"
	"strings"
)

// Error is one problem found in a configuration file.
type Error struct {
	// File is the name given to Parse (the path, for Load).
	File string
	// Line is the 1-based line the problem is about; 0 when the problem is
	// about something absent from the file.
	Line int
	// Column is the 1-based column of a TOML syntax error; 0 otherwise.
	Column int
	// Key is the key path, such as "listener[1].auth"; empty for syntax
	// errors.
	Key string
	// Msg says what is wrong and what to do, starting with the key path.
	Msg string
}

// Error formats the problem as "file:line: message" (or "file:line:column:"
// for syntax errors, "file:" when there is no line).
func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// Errors is every problem found in a configuration file, ordered by line
// (problems without a line last).
type Errors struct {
	List []*Error
}

// Error returns the problems one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, for errors.As and errors.Is.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, err := range e.List {
		errs[i] = err
	}
	return errs
}
