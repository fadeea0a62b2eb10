package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
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

// Errors is every problem of a config file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// defaulter is implemented by list elements and optional blocks that have defaults: the
// decoder calls setDefaults on a fresh element before filling it from the file.
type defaulter interface {
	setDefaults()
}

var defaulterType = reflect.TypeOf((*defaulter)(nil)).Elem()

func setDefaults(v reflect.Value) {
	if v.CanAddr() && v.Addr().Type().Implements(defaulterType) {
		v.Addr().Interface().(defaulter).setDefaults()
	}
}

// nodeDecoder is implemented by config types with their own scalar syntax (durations, sizes).
type nodeDecoder interface {
	decodeNode(n *yaml.Node) error
}

// decoder fills Go values from a YAML node tree, strictly: unknown keys, duplicate keys and
// wrong types are errors. It keeps going after an error so every problem is reported at
// once, and records the position of every value it visits by its path (e.g.
// "uplinks[0].batch.linger") for Validate's messages.
type decoder struct {
	file string
	errs Errors
	pos  map[string]Pos
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

var nodeDecoderType = reflect.TypeOf((*nodeDecoder)(nil)).Elem()

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
	if v.CanAddr() && v.Addr().Type().Implements(nodeDecoderType) {
		if n.Kind != yaml.ScalarNode {
			d.badf(n, "%s: expected a scalar, found %s", path, kindName(n))
			return
		}
		if err := v.Addr().Interface().(nodeDecoder).decodeNode(n); err != nil {
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
	var names []string
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		name := strings.Split(tag, ",")[0]
		fields[name] = i
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := k.Value
		if path != "" {
			sub = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		d.path = path
		if !ok {
			d.errorf(k, "%s: unknown key %q (expected one of: %s)", orTop(path), k.Value, strings.Join(names, ", "))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "%s: key %q appears twice", orTop(path), k.Value)
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), sub)
	}
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

// badPrefix marks, in the position map, the paths whose value failed to decode: Validate
// stays quiet about them (their Go value is a default, not what the user wrote).
const badPrefix = "\x00bad:"

// decodeFile parses data as one YAML document and decodes it into out.
func decodeFile(file string, data []byte, out any) (map[string]Pos, error) {
	d := &decoder{file: file, pos: map[string]Pos{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlError(file, err)}
	}
	if root.Kind == 0 { // empty file
		return d.pos, nil
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return d.pos, nil
		}
		doc = doc.Content[0]
	}
	d.decode(doc, reflect.ValueOf(out).Elem(), "")
	if len(d.errs) > 0 {
		return d.pos, d.errs
	}
	return d.pos, nil
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
