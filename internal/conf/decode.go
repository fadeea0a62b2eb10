// Package conf decodes edgegate's YAML strictly and reports every problem of a config file
// as FILE:LINE:COL: message. Each package that owns a config section declares its types,
// defaults (SetDefaults) and checks (Validate with a Reporter) next to its code; conf holds
// only what they share: the decoder, the positions, the reporter and the scalar types.
package conf

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"slices"
)

// Pos is a position in the config file, 1-based.
type Pos struct{ Line, Col int }

// Error is one problem found in a config file, reported as FILE:LINE:COL: message.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// Defaulter is implemented by list elements and optional blocks that have defaults: the
// decoder calls SetDefaults on a fresh element before filling it from the file.
type Defaulter interface {
	SetDefaults()
}

var defaulterType = reflect.TypeOf((*Defaulter)(nil)).Elem()

func setDefaults(v reflect.Value) {
	if v.CanAddr() && v.Addr().Type().Implements(defaulterType) {
		v.Addr().Interface().(Defaulter).SetDefaults()
	}
}

// ScalarDecoder is implemented by config types with their own scalar syntax (durations,
// sizes, a sync policy): DecodeScalar gets the scalar as written.
type ScalarDecoder interface {
	DecodeScalar(value string) error
}

// Extra, as the type of a struct field, receives the keys of the struct's mapping that no
// other field takes, undecoded: a second pass that knows their type (a sensor's driver
// block, a sink's keys) decodes them with Doc.Decode, and reports the keys nobody takes
// with Doc.UnknownKey.
type Extra []ExtraKey

// ExtraKey is one key of an Extra, with the path of its value.
type ExtraKey struct {
	Key, Value *yaml.Node
	Path       string
}

var extraType = reflect.TypeOf(Extra(nil))

// decoder fills Go values from a YAML node tree, strictly: unknown keys, duplicate keys and
// wrong types are errors. It keeps going after an error so every problem is reported at
// once, and records the position of every value it visits by its path (e.g.
// "uplinks[0].batch.linger") for Validate's messages.
type decoder struct {
	*Doc
	path string // of the value being decoded, for errorf
}

// badf reports a value that could not be decoded, and marks its path so Validate does not
// also complain about the default left in its place.
func (d *decoder) badf(n *yaml.Node, format string, args ...any) {
	d.pos[badPrefix+d.path] = Pos{n.Line, n.Column}
	d.errorf(n, format, args...)
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Pos: Pos{n.Line, n.Column}, Msg: fmt.Sprintf(format, args...)})
}

var scalarDecoderType = reflect.TypeOf((*ScalarDecoder)(nil)).Elem()

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unsupported YAML node"
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.pos[path] = Pos{n.Line, n.Column}
	d.path = path
	if v.CanAddr() && v.Addr().Type().Implements(scalarDecoderType) {
		if n.Kind != yaml.ScalarNode {
			d.badf(n, "%s: expected a scalar, found %s", path, kindName(n))
			return
		}
		if err := v.Addr().Interface().(ScalarDecoder).DecodeScalar(n.Value); err != nil {
			d.badf(n, "%s: %v", path, err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			setDefaults(v.Elem())
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.badf(n, "%s: expected a list, found %s", path, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			setDefaults(s.Index(i))
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.badf(n, "%s: expected a mapping, found %s", path, kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if seen[k.Value] {
				d.errorf(k, "%s: key %q appears twice", path, k.Value)
				continue
			}
			seen[k.Value] = true
			e := reflect.New(v.Type().Elem()).Elem()
			setDefaults(e)
			d.decode(val, e, path+"."+k.Value)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty section keeps its defaults
	}
	if n.Kind != yaml.MappingNode {
		d.badf(n, "%s: expected a mapping, found %s", orTop(path), kindName(n))
		return
	}
	fields := map[string]int{}
	names := fieldNames(v.Type(), fields)
	extra := -1
	for i := 0; i < v.NumField(); i++ {
		if v.Type().Field(i).Type == extraType {
			extra = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := k.Value
		if path != "" {
			sub = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		d.path = path
		if seen[k.Value] {
			d.errorf(k, "%s: key %q appears twice", orTop(path), k.Value)
			continue
		}
		if !ok && extra >= 0 {
			seen[k.Value] = true
			for val.Kind == yaml.AliasNode {
				val = val.Alias
			}
			d.pos[sub] = Pos{val.Line, val.Column}
			f := v.Field(extra)
			f.Set(reflect.Append(f, reflect.ValueOf(ExtraKey{Key: k, Value: val, Path: sub})))
			continue
		}
		if !ok {
			d.errorf(k, "%s: unknown key %q (expected one of: %s)", orTop(path), k.Value, strings.Join(names, ", "))
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), sub)
	}
}

// fieldNames returns the YAML keys of a struct type, sorted; fields, when not nil, maps
// each to its field index.
func fieldNames(t reflect.Type, fields map[string]int) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		name := strings.Split(tag, ",")[0]
		if fields != nil {
			fields[name] = i
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Keys returns the YAML keys of the struct v points to (or is), sorted.
func Keys(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return fieldNames(t, nil)
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.badf(n, "%s: expected %s, found %s", path, typeName(v.Kind()), kindName(n))
		return
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag == "!!null" {
			v.SetString("")
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Tag != "!!bool" {
			d.badf(n, "%s: expected true or false, found %q", path, n.Value)
			return
		}
		b, _ := strconv.ParseBool(n.Value)
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil || n.Tag == "!!str" && n.Style != 0 {
			d.badf(n, "%s: expected an integer, found %q", path, n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil || n.Tag == "!!str" && n.Style != 0 {
			d.badf(n, "%s: expected an integer ≥ 0, found %q", path, n.Value)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || n.Tag == "!!str" && n.Style != 0 {
			d.badf(n, "%s: expected a number, found %q", path, n.Value)
			return
		}
		v.SetFloat(f)
	default:
		d.badf(n, "%s: unsupported config type %s", path, v.Type())
	}
}

func typeName(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "an integer"
	}
}

// Decode parses data as one YAML document and decodes it into out, a pointer to the
// struct of the whole file. The Doc it returns holds the position of every value and the
// problems found so far; a YAML syntax error leaves no positions (Doc.Decoded is false).
func Decode(file string, data []byte, out any) *Doc {
	doc := &Doc{file: file, pos: map[string]Pos{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		doc.errs = Errors{yamlError(file, err)}
		return doc
	}
	doc.decoded = true
	if root.Kind == 0 { // empty file
		return doc
	}
	n := &root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return doc
		}
		n = n.Content[0]
	}
	doc.Decode(n, out, "")
	return doc
}

// Decode fills v, a pointer, from n, the value at path: the second pass over an Extra.
func (doc *Doc) Decode(n *yaml.Node, v any, path string) {
	d := &decoder{Doc: doc}
	d.decode(n, reflect.ValueOf(v).Elem(), path)
}

// DecodeKey decodes one key of an Extra into the struct v points to, as if it had been in
// the struct's own mapping, at path (the mapping that held it): a sink's keys sit at the
// uplink's level.
func (doc *Doc) DecodeKey(k ExtraKey, v any, path string) {
	d := &decoder{Doc: doc}
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: k.Key.Line, Column: k.Key.Column, Content: []*yaml.Node{k.Key, k.Value}}
	d.decodeStruct(n, reflect.ValueOf(v).Elem(), path)
}

// UnknownKey reports a key of the mapping at path that nothing takes; known are the keys
// that would have been.
func (doc *Doc) UnknownKey(k *yaml.Node, path string, known []string) {
	known = slices.Compact(slices.Sorted(slices.Values(known)))
	d := &decoder{Doc: doc, path: path}
	d.errorf(k, "%s: unknown key %q (expected one of: %s)", orTop(path), k.Value, strings.Join(known, ", "))
}

// yamlError turns a yaml.v3 syntax error ("yaml: line 3: ...") into a positioned Error.
func yamlError(file string, err error) *Error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if i := strings.Index(rest, ":"); i > 0 {
			if l, err := strconv.Atoi(rest[:i]); err == nil {
				line = l
				msg = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return &Error{File: file, Pos: Pos{Line: line, Col: 1}, Msg: "invalid YAML: " + msg}
}
