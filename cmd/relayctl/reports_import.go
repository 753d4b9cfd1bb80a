package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/inbound/reportmail"
	"github.com/relaysec/relay/relay/admin"
)

func newReportsImportCmd(a *app) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import TLS reports from files: .json, .json.gz, .zip, .eml, mbox, or - for standard input",
		Long: `Import TLS reports that reached you another way, for example by mail to a
mailbox before the relay's report mailbox existed. Each FILE is:

  a report as JSON (.json) or gzip-compressed JSON (.json.gz)
  a zip archive of such reports (.zip)
  a mail message with a report attached (.eml, as saved by a mail client)
  an mbox file of such messages (a mailbox export)
  a directory: every file in it and in its subdirectories (not hidden ones)
  - : standard input, such as a message from a mail server's pipe delivery

The kind is told by the content, not the name. The daemon stores each
report with source "import" and the file name as sender; a report it
already holds (from HTTPS, email or an earlier import) is reported as a
duplicate and not stored again. Each report prints "stored ID",
"duplicate of ID" or "error: why"; many files show progress on standard
error; a final line counts everything. The exit status is 1 when a file
or report could not be imported.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("reports import needs at least one FILE (or - for standard input)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			items, err := importItems(args)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			imp := &importer{a: a, c: c, stdin: cmd.InOrStdin(), quiet: quiet, total: len(items), start: time.Now()}
			return imp.run(cmd.Context(), items)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only errors and the final count")
	return cmd
}

// importItems expands the arguments into the files to read, in order:
// directories become the regular files under them, sorted, without
// hidden files and directories; "-" stays as standard input.
func importItems(args []string) ([]string, error) {
	var items []string
	for _, arg := range args {
		if arg == "-" {
			items = append(items, arg)
			continue
		}
		st, err := os.Stat(arg)
		if err != nil {
			return nil, fmt.Errorf("reports import: %w", err)
		}
		if !st.IsDir() {
			items = append(items, arg)
			continue
		}
		n := len(items)
		err = filepath.WalkDir(arg, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != arg && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				items = append(items, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reports import: %w", err)
		}
		if len(items) == n {
			return nil, fmt.Errorf("reports import: directory %s holds no files", arg)
		}
	}
	return items, nil
}

// importLine is one outcome, as printed by --json: a report stored or
// found a duplicate, or an error for a report, a message or a file.
type importLine struct {
	File         string `json:"file"`
	ID           string `json:"id,omitempty"`
	Duplicate    bool   `json:"duplicate,omitempty"`
	Organization string `json:"organization,omitempty"`
	ReportID     string `json:"report_id,omitempty"`
	Error        string `json:"error,omitempty"`
}

// importSummary is the output of --json.
type importSummary struct {
	Files      int          `json:"files"`
	Messages   int          `json:"messages"`
	Stored     int          `json:"stored"`
	Duplicates int          `json:"duplicates"`
	Errors     int          `json:"errors"`
	Results    []importLine `json:"results"`
}

// progressEvery is how often progress is shown for many files.
const progressEvery = 2 * time.Second

// importer sends files to the daemon one by one and keeps count.
type importer struct {
	a     *app
	c     *admin.Client
	stdin io.Reader
	quiet bool

	total    int // files to read
	done     int // files read
	start    time.Time
	lastShow time.Time
	sum      importSummary
}

func (imp *importer) run(ctx context.Context, items []string) error {
	imp.sum.Results = []importLine{}
	for _, item := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := imp.file(ctx, item); err != nil {
			return err
		}
		imp.done++
		imp.progress(false)
	}
	imp.progress(true)
	if imp.a.jsonOut {
		if err := imp.a.printJSON(imp.sum); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(imp.a.stdout, imp.countLine())
	}
	if imp.sum.Errors > 0 {
		return fmt.Errorf("import incomplete: %s (see the error lines)", plural(imp.sum.Errors, "error"))
	}
	return nil
}

// countLine is the final count.
func (imp *importer) countLine() string {
	s := imp.sum
	files := plural(s.Files, "file")
	if s.Messages > 0 {
		files += fmt.Sprintf(" (%s from mbox)", plural(s.Messages, "message"))
	}
	return fmt.Sprintf("%s: %d stored, %s, %s", files, s.Stored, plural(s.Duplicates, "duplicate"), plural(s.Errors, "error"))
}

// progress shows on standard error how far an import of many files is,
// at most every progressEvery; final clears nothing but says it is done.
func (imp *importer) progress(final bool) {
	if imp.total < 2 || imp.a.jsonOut && !final {
		return
	}
	now := time.Now()
	if final {
		if now.Sub(imp.start) < progressEvery {
			return // fast enough that progress was never shown
		}
	} else if now.Sub(imp.lastShow) < progressEvery || now.Sub(imp.start) < progressEvery {
		return
	}
	imp.lastShow = now
	fmt.Fprintf(imp.a.stderr, "relayctl: imported %d of %d files: %d stored, %d duplicates, %d errors\n",
		imp.done, imp.total, imp.sum.Stored, imp.sum.Duplicates, imp.sum.Errors)
}

// file imports one argument: standard input or a file, an mbox file
// message by message.
func (imp *importer) file(ctx context.Context, item string) error {
	imp.sum.Files++
	name := item
	var r io.Reader
	if item == "-" {
		name, r = "stdin", imp.stdin
	} else {
		f, err := os.Open(item)
		if err != nil {
			imp.fail(name, err)
			return nil
		}
		defer f.Close()
		r = f
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(5)
	if string(head) == "From " {
		n := 0
		for msg, err := range reportmail.Mbox(br, admin.MaxImportBytes) {
			n++
			imp.sum.Messages++
			where := fmt.Sprintf("%s#%d", name, n)
			if err != nil {
				imp.fail(where, err)
				continue
			}
			if err := imp.send(ctx, where, msg); err != nil {
				return err
			}
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(br, admin.MaxImportBytes+1))
	if err != nil {
		imp.fail(name, fmt.Errorf("read: %w", err))
		return nil
	}
	if len(data) > admin.MaxImportBytes {
		imp.fail(name, fmt.Errorf("file over %d bytes (an mbox file would be split: it must start with a \"From \" line)", admin.MaxImportBytes))
		return nil
	}
	return imp.send(ctx, name, data)
}

// send imports one file or message and prints the outcome per report.
// Only errors that stop the whole import (no daemon, no report store) are
// returned.
func (imp *importer) send(ctx context.Context, name string, data []byte) error {
	res, err := imp.c.ImportReports(ctx, name, bytes.NewReader(data))
	if err != nil {
		var ce *admin.ConnectError
		if errors.As(err, &ce) || errors.Is(err, admin.ErrReportsDisabled) || ctx.Err() != nil {
			return err
		}
		imp.fail(name, err)
		return nil
	}
	for _, r := range res.Reports {
		l := importLine{File: name, ID: r.ID, Duplicate: r.Duplicate, Organization: r.Organization, ReportID: r.ReportID, Error: r.Error}
		if len(res.Reports) > 1 {
			l.File = name + " (" + strings.TrimPrefix(r.Where, name+" ") + ")"
		}
		imp.sum.Results = append(imp.sum.Results, l)
		switch {
		case r.Error != "":
			imp.sum.Errors++
			imp.print(true, "%s: error: %s\n", clean(l.File), clean(r.Error))
		case r.Duplicate:
			imp.sum.Duplicates++
			imp.print(false, "%s: duplicate of %s (%s, %s)\n", clean(l.File), r.ID, clean(r.Organization), clean(r.ReportID))
		default:
			imp.sum.Stored++
			imp.print(false, "%s: stored %s (%s, %s)\n", clean(l.File), r.ID, clean(r.Organization), clean(r.ReportID))
		}
	}
	return nil
}

// fail records a file or message that yielded no report.
func (imp *importer) fail(name string, err error) {
	imp.sum.Errors++
	imp.sum.Results = append(imp.sum.Results, importLine{File: name, Error: err.Error()})
	imp.print(true, "%s: error: %s\n", clean(name), clean(err.Error()))
}

// print writes an outcome line unless --json, or --quiet for a success.
func (imp *importer) print(isError bool, format string, args ...any) {
	if imp.a.jsonOut || imp.quiet && !isError {
		return
	}
	fmt.Fprintf(imp.a.stdout, format, args...)
}
