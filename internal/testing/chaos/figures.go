package chaos

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
)

// figuresEnv names a file where each suite's RunCases appends its figures,
// one JSON object a line: make chaos runs the driver modules' suites
// first, then the core's, whose report includes them all.
const figuresEnv = "CHAOS_FIGURES"

func appendFigures(path string, figs []Figures) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, fig := range figs {
		if err := enc.Encode(fig); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// ReadFigures returns the figures in CHAOS_FIGURES, in the order written;
// none if it is unset or missing.
func ReadFigures() ([]Figures, error) {
	path := os.Getenv(figuresEnv)
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var figs []Figures
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var fig Figures
		if err := json.Unmarshal(sc.Bytes(), &fig); err != nil {
			return nil, err
		}
		figs = append(figs, fig)
	}
	return figs, sc.Err()
}
