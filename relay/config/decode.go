package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// parser holds the state of one Parse call: the document, where each key
// path is in it, and the problems found so far.
//
// Decoding happens in two passes over the document. go-toml decodes it into
// a generic tree (which finds syntax errors, duplicate keys and redefined
// tables), and its unstable parser gives the byte offset of every key, from
// which lines maps key paths such as "listener[1].auth" to line numbers.
// Then the tree is decoded into Config by reflection over the toml tags, so
// that every unknown key and every value of the wrong type is reported, not
// only the first one, each with its line.
type parser struct {
	name  string
	data  []byte
	lines map[string]int  // key path → 1-based line
	bad   map[string]bool // key paths whose value could not be decoded
	errs  []*Error
	warns []*Error
}

func newParser(data []byte, name string) *parser {
	return &parser{
		name:  name,
		data:  bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), // a UTF-8 BOM, as Windows editors write
		lines: make(map[string]int),
		bad:   make(map[string]bool),
	}
}

// parse decodes and validates the document; problems are in p.errs and
// p.warns.
func (p *parser) parse() *Config {
	var tree map[string]any
	if err := toml.Unmarshal(p.data, &tree); err != nil {
		p.syntaxError(err)
		return nil
	}
	p.index()
	cfg := new(Config)
	cfg.setDefaults()
	p.decodeTable("", reflect.ValueOf(cfg).Elem(), tree)
	p.validate(cfg)
	return cfg
}

func (p *parser) syntaxError(err error) {
	e := &Error{File: p.name, Msg: "TOML syntax error: " + strings.TrimPrefix(err.Error(), "toml: ")}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		e.Line, e.Column = de.Position()
		if key := de.Key(); len(key) > 0 {
			e.Key = strings.Join(key, ".")
			if !strings.Contains(e.Msg, e.Key) {
				e.Msg += " (key " + e.Key + ")"
			}
		}
	}
	p.errs = append(p.errs, e)
}

// errorList returns the problems found, ordered by line.
func (p *parser) errorList() *Errors {
	return &Errors{List: sortByLine(p.errs)}
}

// warnings returns the warnings found, ordered by line, formatted.
func (p *parser) warnings() []string {
	var ws []string
	for _, w := range sortByLine(p.warns) {
		ws = append(ws, w.Error())
	}
	return ws
}

// sortByLine sorts problems by line, keeping their order within a line;
// problems without a line go last.
func sortByLine(list []*Error) []*Error {
	key := func(e *Error) int {
		if e.Line == 0 {
			return math.MaxInt
		}
		return e.Line
	}
	slices.SortStableFunc(list, func(a, b *Error) int { return cmp.Compare(key(a), key(b)) })
	return list
}

// failf records an error about the key at path. The message is the path, a
// space, and the formatted text, which should say what is wrong and what to
// do. The error is dropped when the value at path (or a table containing
// it) could not be decoded: what validation sees there is a default, not the
// file's value, and the decode error already says what is wrong.
func (p *parser) failf(path, format string, args ...any) {
	if !p.decoded(path) {
		return
	}
	p.errs = append(p.errs, p.problem(path, format, args...))
}

// warnf records a warning about the key at path, like failf.
func (p *parser) warnf(path, format string, args ...any) {
	if !p.decoded(path) {
		return
	}
	p.warns = append(p.warns, p.problem(path, format, args...))
}

// decodeFailf records an error found while decoding the value at path and
// marks path as undecoded.
func (p *parser) decodeFailf(path, format string, args ...any) {
	p.bad[path] = true
	p.errs = append(p.errs, p.problem(path, format, args...))
}

// problem makes the Error for the key at path.
func (p *parser) problem(path, format string, args ...any) *Error {
	return &Error{File: p.name, Line: p.line(path), Key: path, Msg: path + " " + fmt.Sprintf(format, args...)}
}

// decoded reports whether the values at all paths were decoded from the
// file without error (or are absent from it).
func (p *parser) decoded(paths ...string) bool {
	for _, path := range paths {
		for ; path != ""; path = parentPath(path) {
			if p.bad[path] {
				return false
			}
		}
	}
	return true
}

// line returns the line of the key at path or, when it is not in the file,
// of the nearest table containing it; 0 when none is.
func (p *parser) line(path string) int {
	for ; path != ""; path = parentPath(path) {
		if l, ok := p.lines[path]; ok {
			return l
		}
	}
	return 0
}

// parentPath returns the path of the table or array containing path:
// "listener[0]" for "listener[0].auth", "listener" for "listener[0]".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func joinPath(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}

func indexPath(array string, i int) string {
	return array + "[" + strconv.Itoa(i) + "]"
}

// index fills p.lines from the unstable parser's AST. Array tables are
// numbered as the decoder numbers them: the second [[listener]] is
// "listener[1]", its keys "listener[1].address"; array elements are
// "listener[0].trusted_networks[2]".
func (p *parser) index() {
	var up unstable.Parser
	up.Reset(p.data)
	arrays := make(map[string]int) // array table path → tables seen so far
	table := ""
	for up.NextExpression() {
		expr := up.Expression()
		switch expr.Kind {
		case unstable.Table, unstable.ArrayTable:
			path := ""
			it := expr.Key()
			for it.Next() {
				k := it.Node()
				path = joinPath(path, string(k.Data))
				p.mark(path, k.Raw)
				switch n, ok := arrays[path]; {
				case it.IsLast() && expr.Kind == unstable.ArrayTable:
					arrays[path] = n + 1
					path = indexPath(path, n)
					p.mark(path, k.Raw)
				case ok:
					path = indexPath(path, n-1)
				}
			}
			table = path
		case unstable.KeyValue:
			p.indexKeyValue(table, expr)
		}
	}
	// The document was decoded successfully already, so the parser cannot
	// fail here; if it did, errors would merely lack line numbers.
}

func (p *parser) indexKeyValue(table string, kv *unstable.Node) {
	path := table
	it := kv.Key()
	for it.Next() {
		k := it.Node()
		path = joinPath(path, string(k.Data))
		p.mark(path, k.Raw)
	}
	p.indexValue(path, kv.Value())
}

func (p *parser) indexValue(path string, v *unstable.Node) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				p.indexKeyValue(path, c)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			elem := indexPath(path, i)
			i++
			p.mark(elem, c.Raw)
			p.indexValue(elem, c)
		}
	}
}

// mark records the line of r for path, unless path already has one (a
// table's line is where it first appears).
func (p *parser) mark(path string, r unstable.Range) {
	if _, ok := p.lines[path]; ok || r.Length == 0 {
		return
	}
	p.lines[path] = bytes.Count(p.data[:r.Offset], []byte("\n")) + 1
}

// tomlField is a struct field with its TOML key.
type tomlField struct {
	name  string
	index int
}

// tomlFields returns the fields of struct type t that have a toml tag, in
// declaration order.
func tomlFields(t reflect.Type) []tomlField {
	var fields []tomlField
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			fields = append(fields, tomlField{name, i})
		}
	}
	return fields
}

// isTable reports whether values of type t are TOML tables. Duration and
// netip.Prefix are structs, but written as strings.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != reflect.TypeFor[Duration]() && t != reflect.TypeFor[netip.Prefix]()
}

// decodeTable decodes the generic table m into the struct v, in file order.
func (p *parser) decodeTable(path string, v reflect.Value, m map[string]any) {
	fields := tomlFields(v.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(p.line(joinPath(path, a)), p.line(joinPath(path, b))), cmp.Compare(a, b))
	})
	for _, key := range keys {
		i := slices.IndexFunc(fields, func(f tomlField) bool { return f.name == key })
		if i < 0 {
			p.unknownKey(path, key, fields, m)
			continue
		}
		p.decodeValue(joinPath(path, key), v.Field(fields[i].index), m[key])
	}
}

// decodeValue decodes the generic value raw into v.
func (p *parser) decodeValue(path string, v reflect.Value, raw any) {
	switch t := v.Addr().Interface().(type) {
	case *Duration:
		s, ok := raw.(string)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		if err := t.UnmarshalText([]byte(s)); err != nil {
			p.decodeFailf(path, "= %v", err)
		}
		return
	case *Size:
		switch r := raw.(type) {
		case string:
			if err := t.UnmarshalText([]byte(r)); err != nil {
				p.decodeFailf(path, "= %v", err)
			}
		case int64:
			if r < 0 {
				p.decodeFailf(path, "= %d is negative: %s", r, sizeHint)
				return
			}
			*t = Size(r)
		default:
			p.typeError(path, v.Type(), raw)
		}
		return
	case *netip.Prefix:
		s, ok := raw.(string)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		pfx, err := parsePrefix(s)
		if err != nil {
			p.decodeFailf(path, "= %q is not a network (%v): write an address or address/length, such as \"192.0.2.0/24\", \"2001:db8::/32\" or \"192.0.2.7\"", s, err)
			return
		}
		if pfx != pfx.Masked() {
			p.warnf(path, "= %q has bits set beyond its length /%d: it means %q; write that instead, or fix the length", s, pfx.Bits(), pfx.Masked().String())
		}
		*t = pfx.Masked()
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			n := reflect.New(v.Type().Elem())
			if d, ok := n.Interface().(defaulter); ok {
				d.setDefaults()
			}
			v.Set(n)
		}
		p.decodeValue(path, v.Elem(), raw)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		p.decodeTable(path, v, m)
	case reflect.Slice:
		arr, ok := raw.([]any)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(arr), len(arr))
		for i, elem := range arr {
			e := s.Index(i)
			if d, ok := e.Addr().Interface().(defaulter); ok {
				d.setDefaults()
			}
			p.decodeValue(indexPath(path, i), e, elem)
		}
		v.Set(s)
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		v.SetString(s)
	case reflect.Int:
		n, ok := raw.(int64)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		if v.OverflowInt(n) {
			p.decodeFailf(path, "= %d is too large", n)
			return
		}
		v.SetInt(n)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			p.typeError(path, v.Type(), raw)
			return
		}
		v.SetBool(b)
	default:
		// Only reachable if a field of an unsupported type is added to
		// Config; the tests decode every field.
		p.decodeFailf(path, "has Go type %s, which the configuration decoder does not support", v.Type())
	}
}

// parsePrefix parses "192.0.2.0/24" or a bare address, which is a /32 or
// /128. The error says what is wrong without repeating the input.
func parsePrefix(s string) (netip.Prefix, error) {
	addrText, bitsText, hasBits := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", addrText)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, errors.New("a zone is not allowed")
	}
	if !hasBits {
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	bits, err := strconv.Atoi(bitsText)
	if err != nil || bits < 0 || bits > addr.BitLen() || bitsText != strconv.Itoa(bits) {
		return netip.Prefix{}, fmt.Errorf("the length must be a number from 0 to %d", addr.BitLen())
	}
	return netip.PrefixFrom(addr, bits), nil
}

// unknownKey reports a key of the table at path that the decoder does not
// know, suggesting the key that was probably meant.
func (p *parser) unknownKey(table, key string, fields []tomlField, m map[string]any) {
	path := joinPath(table, key)
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	if s := suggest(key, names); s != "" {
		p.errs = append(p.errs, p.problem(path, "is not a known key: did you mean %q?", s))
		if _, ok := m[s]; !ok {
			// The value meant for s is missing because of the typo:
			// checks of s would only repeat the problem.
			p.bad[joinPath(table, s)] = true
		}
		return
	}
	if where := tablesWithKey(key); len(where) > 0 {
		p.errs = append(p.errs, p.problem(path, "is not a known key in %s: %q belongs in %s; is a table header missing or misplaced above it?",
			tableName(table), key, strings.Join(where, " or ")))
		return
	}
	p.errs = append(p.errs, p.problem(path, "is not a known key: remove it; the keys of %s are %s",
		tableName(table), strings.Join(names, ", ")))
}

// tableName names the table at path as it is written in a file:
// "[[listener]]" for "listener[0]", "[inbound.tls_rpt]", "the top level".
func tableName(path string) string {
	switch {
	case path == "":
		return "the top level"
	case strings.HasSuffix(path, "]"):
		return "[[" + stripIndices(path) + "]]"
	default:
		return "[" + stripIndices(path) + "]"
	}
}

// suggest returns the name that key was probably meant to be, or "": a
// name that key is a prefix of, or the closest name within edit distance 2
// (1 for keys shorter than 5 bytes). Case and "-" for "_" do not count as
// differences.
func suggest(key string, names []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	k := norm(key)
	if len(k) >= 3 {
		for _, name := range names {
			if strings.HasPrefix(norm(name), k) {
				return name
			}
		}
	}
	limit := 2
	if len(k) < 5 {
		limit = 1
	}
	best, bestDist := "", limit+1
	for _, name := range names {
		if d := editDistance(k, norm(name)); d < bestDist {
			best, bestDist = name, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes cost 1.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// schemaKey is a key the decoder knows.
type schemaKey struct {
	path  string // "listener.trusted_networks": no indices
	table string // the table it belongs in, as tableName writes it
}

// schema lists every key of Config, tables before their keys.
func schema() []schemaKey {
	var keys []schemaKey
	var walk func(t reflect.Type, prefix, table string)
	walk = func(t reflect.Type, prefix, table string) {
		for _, f := range tomlFields(t) {
			path := joinPath(prefix, f.name)
			keys = append(keys, schemaKey{path, table})
			ft := t.Field(f.index).Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case isTable(ft):
				walk(ft, path, "["+path+"]")
			case ft.Kind() == reflect.Slice && isTable(ft.Elem()):
				walk(ft.Elem(), path, "[["+path+"]]")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", "the top level")
	return keys
}

// tablesWithKey returns the tables that have a key named key.
func tablesWithKey(key string) []string {
	var tables []string
	for _, k := range schema() {
		if k.path == key || strings.HasSuffix(k.path, "."+key) {
			tables = append(tables, k.table)
		}
	}
	return tables
}

// typeError reports a value whose TOML type does not fit the field.
func (p *parser) typeError(path string, want reflect.Type, raw any) {
	key := path[strings.LastIndexAny(path, ".]")+1:]
	tableKey := stripIndices(path)
	switch {
	case want.Kind() == reflect.Slice && isTable(want.Elem()) && isMap(raw):
		p.decodeFailf(path, "is a single table, but a list of tables is needed: write the header with double brackets, [[%s]], once per entry", tableKey)
		return
	case isTable(want) && isTableArray(raw):
		p.decodeFailf(path, "is a list of tables, but a single table is needed: write the header with single brackets, [%s], once", tableKey)
		return
	}
	var hint string
	switch r := raw.(type) {
	case string:
		switch {
		case want.Kind() == reflect.Int:
			if _, err := strconv.Atoi(r); err == nil {
				hint = fmt.Sprintf(": remove the quotes, %s = %s", key, r)
			}
		case want.Kind() == reflect.Bool:
			if r == "true" || r == "false" {
				hint = fmt.Sprintf(": remove the quotes, %s = %s", key, r)
			}
		case want.Kind() == reflect.Slice && !isTable(want.Elem()):
			hint = fmt.Sprintf(": put it in brackets, %s = [%q]", key, r)
		}
	case int64:
		switch {
		case want == reflect.TypeFor[Duration]():
			hint = fmt.Sprintf(": write it as a string with a unit, %s = \"%ds\"", key, r)
		case want.Kind() == reflect.String:
			hint = fmt.Sprintf(": put it in quotes, %s = \"%d\"", key, r)
		}
	case float64:
		if want.Kind() == reflect.Int {
			hint = ": it must be a whole number"
		}
	}
	value := formatValue(raw)
	if strings.HasSuffix(path, "password_hash") {
		// It may be a password pasted by mistake: keep it out of logs.
		value, hint = "(value not shown)", ""
	}
	p.decodeFailf(path, "= %s is %s, but %s is needed%s", value, tomlKind(raw), describeType(want), hint)
}

func isMap(raw any) bool {
	_, ok := raw.(map[string]any)
	return ok
}

func isTableArray(raw any) bool {
	arr, ok := raw.([]any)
	return ok && len(arr) > 0 && isMap(arr[0])
}

// stripIndices turns "inbound.mta_sts[0].mx[1]" into "inbound.mta_sts.mx".
func stripIndices(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '[' {
			i = strings.IndexByte(path[i:], ']') + i
			continue
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

// tomlKind names the TOML type of a generic value, with an article.
func tomlKind(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date or time"
	}
}

// describeType says what TOML value a field of type t needs.
func describeType(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Duration]():
		return `a duration string such as "5m"`
	case reflect.TypeFor[Size]():
		return `a size such as "50MiB" or a number of bytes`
	case reflect.TypeFor[netip.Prefix]():
		return `a network string such as "127.0.0.0/8"`
	case reflect.TypeFor[[]netip.Prefix]():
		return `an array of network strings such as ["127.0.0.0/8"]`
	case reflect.TypeFor[[]string]():
		return "an array of strings"
	}
	switch {
	case t.Kind() == reflect.Pointer:
		return describeType(t.Elem())
	case isTable(t):
		return "a table"
	case t.Kind() == reflect.Slice && isTable(t.Elem()):
		return "a list of tables"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.Bool:
		return "true or false"
	default:
		return t.String()
	}
}

// formatValue writes a generic value roughly as TOML does.
func formatValue(raw any) string {
	switch r := raw.(type) {
	case string:
		return strconv.Quote(r)
	case []any:
		parts := make([]string, len(r))
		for i, e := range r {
			parts[i] = formatValue(e)
		}
		s := "[" + strings.Join(parts, ", ") + "]"
		if len(s) > 80 {
			s = s[:76] + " ...]"
		}
		return s
	case map[string]any:
		return "{...}"
	default:
		return fmt.Sprint(r)
	}
}
