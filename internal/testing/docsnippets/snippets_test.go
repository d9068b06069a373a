// Package docsnippets checks that every Go snippet in the README and the
// docs/ pages compiles against the current API: the pages are read and
// copied by users, and nothing else would notice when they drift.
package docsnippets

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// pages are the files whose ```go blocks are checked, from the repository root.
var pages = []string{"README.md", "CONTRIBUTING.md", "docs/*.md"}

// prelude declares what snippets take as given: the imports a user would
// add, and the variables and functions a snippet refers to without
// declaring them (ctx, dsn, the job). Unused imports and variables are
// allowed: a snippet shows a part of a program.
const prelude = `package snippet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/mutexkit/mutexkit/conformance"
	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

var (
	ctx    context.Context
	dsn    string
	db     *sql.DB
	pools  []*redis.Pool
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	logger *slog.Logger
	table  *mem.Table
)

func work(context.Context) error   { return nil }
func report(context.Context) error { return nil }

func newHarness(context.Context, *testing.T) (conformance.Harness, error) { return nil, nil }

`

// modules are the pages about a module of their own (a driver with its own
// go.mod): their snippets are checked in that module, where its package
// resolves, with a prelude of their own, since that module's go.sum need
// not know the core's other dependencies.
var modules = map[string]struct{ dir, prelude string }{
	"docs/MYSQL.md": {"driver/mysql", `package snippet

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mutexkit/mutexkit/driver/mysql"
	"github.com/mutexkit/mutexkit/mutex"
)

var (
	ctx context.Context
	db  *sql.DB
)
`},
	// docs/POSTGRES.md shows pgx beside lib/pq: checked where both resolve.
	"docs/POSTGRES.md": {"driver/postgres/pgxv5", `package snippet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres"
	"github.com/mutexkit/mutexkit/driver/postgres/pgxv5"
	"github.com/mutexkit/mutexkit/mutex"
)

var (
	ctx  context.Context
	dsn  string
	db   *sql.DB
	pool *pgxpool.Pool
)
`},
	// docs/REDIS.md shows go-redis beside redigo: checked where both resolve.
	"docs/REDIS.md": {"driver/redlock/goredis", `package snippet

import (
	"context"
	"time"

	redigo "github.com/gomodule/redigo/redis"
	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock"
	"github.com/mutexkit/mutexkit/driver/redlock/goredis"
	"github.com/mutexkit/mutexkit/mutex"
)

var (
	ctx   context.Context
	pools []*redigo.Pool
)
`},
}

var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

func TestSnippetsCompile(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	var files []string
	for _, p := range pages {
		m, err := filepath.Glob(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	fset := token.NewFileSet()
	source := importer.ForCompiler(fset, "source", nil).(types.ImporterFrom)
	imp := cachedImporter{source, map[string]*types.Package{}, ""}
	moduleImp := map[string]cachedImporter{}
	for page, m := range modules {
		own := importer.ForCompiler(fset, "source", nil).(types.ImporterFrom)
		moduleImp[page] = cachedImporter{own, map[string]*types.Package{}, filepath.Join(root, m.dir)}
	}
	checked := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range goBlock.FindAllSubmatchIndex(text, -1) {
			code := string(text[m[2]:m[3]])
			line := 1 + strings.Count(string(text[:m[2]]), "\n")
			page := strings.TrimPrefix(f, root+string(filepath.Separator))
			t.Run(fmt.Sprint(filepath.Base(f), "#", i+1), func(t *testing.T) {
				if m, ok := modules[filepath.ToSlash(page)]; ok {
					checkSnippet(t, fset, moduleImp[filepath.ToSlash(page)], m.prelude, page, line, code)
					return
				}
				checkSnippet(t, fset, imp, prelude, page, line, code)
			})
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no snippets found: the page list is wrong")
	}
}

// checkSnippet type-checks one snippet: declarations at the top level, and
// anything else as the body of a function returning error.
func checkSnippet(t *testing.T, fset *token.FileSet, imp types.Importer, prelude, page string, line int, code string) {
	name := fmt.Sprintf("%s:%d", page, line)
	code = stripImports(code)
	at := fmt.Sprintf("\n//line %s:%d\n", page, line) // errors point into the page
	var src string
	if topLevel(code) {
		src = prelude + at + code
	} else {
		src = prelude + "\nfunc _() error {" + at + code + "\nreturn nil\n}\n"
	}
	file, err := parser.ParseFile(fset, "prelude.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("%s does not parse: %v\n%s", name, err, code)
	}
	var hard []string
	conf := types.Config{Importer: imp, Error: func(err error) {
		if te, ok := err.(types.Error); ok && te.Soft {
			return // declared and not used, imported and not used
		}
		hard = append(hard, err.Error())
	}}
	conf.Check("snippet", fset, []*ast.File{file}, nil)
	if len(hard) > 0 {
		t.Errorf("%s does not compile:\n  %s\n%s", name, strings.Join(hard, "\n  "), code)
	}
}

// stripImports blanks a snippet's import declarations, keeping its line
// count: the prelude has them.
func stripImports(code string) string {
	blank := func(s string) string { return strings.Repeat("\n", strings.Count(s, "\n")) }
	code = regexp.MustCompile(`(?s)import \(.*?\)\n`).ReplaceAllStringFunc(code, blank)
	return regexp.MustCompile(`(?m)^import .*\n`).ReplaceAllStringFunc(code, blank)
}

func topLevel(code string) bool {
	return regexp.MustCompile(`(?m)^(func|type|var|const) `).MatchString(code)
}

// cachedImporter remembers packages by import path: the source importer
// asks the go command where each one lives on every import.
type cachedImporter struct {
	types.ImporterFrom
	pkgs map[string]*types.Package
	dir  string // where the go command resolves imports; "" for this module
}

func (c cachedImporter) Import(path string) (*types.Package, error) { return c.ImportFrom(path, "", 0) }

func (c cachedImporter) ImportFrom(path, dir string, mode types.ImportMode) (*types.Package, error) {
	if p := c.pkgs[path]; p != nil {
		return p, nil
	}
	if c.dir != "" {
		// The source importer runs the go command in build.Default.Dir
		// (srcDir only tells it whether modules are on). Subtests run one
		// at a time, so the swap is seen by this call alone.
		defer func(was string) { build.Default.Dir = was }(build.Default.Dir)
		build.Default.Dir, dir = c.dir, c.dir
	}
	p, err := c.ImporterFrom.ImportFrom(path, dir, mode)
	if err == nil {
		c.pkgs[path] = p
	}
	return p, err
}
