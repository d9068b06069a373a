package conformance

import (
	"go/parser"
	"go/token"
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
