package conf

import (
	"fmt"
	"sort"
	"strings"
)

// Doc is a config file being decoded and checked: the position of every value it holds, by
// path ("uplinks[0].batch.linger"), and every problem found so far, decoding and
// validation alike.
type Doc struct {
	file    string
	pos     map[string]Pos
	errs    Errors
	decoded bool
}

// NewDoc returns an empty Doc for file: for checking values built in code (a test's
// config), whose problems then have no position.
func NewDoc(file string) *Doc { return &Doc{file: file, pos: map[string]Pos{}, decoded: true} }

// File is the name of the file.
func (doc *Doc) File() string { return doc.file }

// Decoded reports whether the file was YAML at all: after a syntax error there is nothing
// to validate.
func (doc *Doc) Decoded() bool { return doc.decoded }

// Err returns every problem found, in file order (an Errors), or nil.
func (doc *Doc) Err() error {
	if len(doc.errs) == 0 {
		return nil
	}
	es := append(Errors(nil), doc.errs...)
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Pos.Line != es[j].Pos.Line {
			return es[i].Pos.Line < es[j].Pos.Line
		}
		return es[i].Pos.Col < es[j].Pos.Col
	})
	out := es[:0]
	seen := map[string]bool{}
	for _, e := range es {
		if k := e.Error(); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

// Position returns where the value at path is in the file, or where its nearest present
// parent is; the zero Pos when none is.
func (doc *Doc) Position(path string) Pos {
	for p := path; ; {
		if pos, ok := doc.pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			if pos, ok := doc.pos[""]; ok {
				return pos
			}
			return Pos{}
		}
		p = p[:i]
	}
}

// Has reports whether the file set the value at path.
func (doc *Doc) Has(path string) bool {
	_, ok := doc.pos[path]
	return ok
}

// badPrefix marks, in the position map, the paths whose value failed to decode: the
// reporter stays quiet about them (their Go value is a default, not what the user wrote).
const badPrefix = "\x00bad:"

// Reporter reports the problems of one section of a Doc, by keys relative to its path.
// Validate methods take one, positioned at their own value.
type Reporter struct {
	doc  *Doc
	path string
}

// Reporter returns a reporter for the value at path ("" for the whole file).
func (doc *Doc) Reporter(path string) *Reporter { return &Reporter{doc: doc, path: path} }

// At returns a reporter for the value at key below r's (a field name, or "[i]").
func (r *Reporter) At(key string) *Reporter { return &Reporter{doc: r.doc, path: r.Path(key)} }

// Path is the full path of key below r's value ("" for r's own).
func (r *Reporter) Path(key string) string {
	switch {
	case key == "":
		return r.path
	case r.path == "":
		return key
	case key[0] == '[':
		return r.path + key
	}
	return r.path + "." + key
}

// Has reports whether the file set key.
func (r *Reporter) Has(key string) bool { return r.doc.Has(r.Path(key)) }

// Errorf reports a problem with the value at key (see Path). When that key is absent from
// the file, the nearest enclosing value that is present gives the position; when it or a
// parent failed to decode, the problem was reported already and is dropped.
func (r *Reporter) Errorf(key, format string, args ...any) {
	path := r.Path(key)
	for p := path; ; {
		if _, bad := r.doc.pos[badPrefix+p]; bad {
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	r.doc.errs = append(r.doc.errs, &Error{File: r.doc.file, Pos: r.doc.Position(path), Msg: fmt.Sprintf(format, args...)})
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

// Positions returns a Doc with the positions of doc and no problems: to check a config
// again (a reload compares, a test edits) with the positions of its file.
func (doc *Doc) Positions() *Doc {
	out := &Doc{file: doc.file, pos: make(map[string]Pos, len(doc.pos)), decoded: doc.decoded}
	for k, v := range doc.pos {
		out.pos[k] = v
	}
	return out
}
