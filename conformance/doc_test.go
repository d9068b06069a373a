package conformance

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDocListsCases: the package doc lists every case, in the order they
// run, so the names Capabilities.Lacks takes cannot drift from the suite.
func TestDocListsCases(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "conformance.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(f.Doc.Text(), "\n# Cases\n")
	if !ok {
		t.Fatal(`the package doc has no "# Cases" section`)
	}
	var listed []string
	for line := range strings.Lines(section) {
		if strings.HasPrefix(line, "# ") { // the next section
			break
		}
		if item, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
			name, _, _ := strings.Cut(item, ":")
			listed = append(listed, name)
		}
	}
	if names := caseNames(); !slices.Equal(listed, names) {
		t.Errorf("the package doc lists the cases\n\t%s\nthe suite runs\n\t%s", strings.Join(listed, ", "), strings.Join(names, ", "))
	}
}

// TestDriversDocListsCases: docs/DRIVERS.md's table of cases matches the
// suite too.
func TestDriversDocListsCases(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "DRIVERS.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Certifying it\n")
	if !ok {
		t.Fatal(`docs/DRIVERS.md has no "## Certifying it" section`)
	}
	var listed []string
	for line := range strings.Lines(section) {
		if strings.HasPrefix(line, "## ") {
			break
		}
		if row, ok := strings.CutPrefix(line, "| `"); ok {
			name, _, _ := strings.Cut(row, "`")
			listed = append(listed, name)
		}
	}
	if names := caseNames(); !slices.Equal(listed, names) {
		t.Errorf("docs/DRIVERS.md lists the cases\n\t%s\nthe suite runs\n\t%s", strings.Join(listed, ", "), strings.Join(names, ", "))
	}
}
