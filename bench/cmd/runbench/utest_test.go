package main

import (
	"math"
	"testing"
)

func TestMannWhitneyP(t *testing.T) {
	for _, c := range []struct {
		name string
		x, y []float64
		want float64
	}{
		// Fully apart, 6 and 6: 2 of the C(12,6) = 924 orderings are as
		// uneven (benchstat prints p=0.002).
		{"apart", []float64{1, 2, 3, 4, 5, 6}, []float64{7, 8, 9, 10, 11, 12}, 2.0 / 924},
		{"apart, other way", []float64{7, 8, 9, 10, 11, 12}, []float64{1, 2, 3, 4, 5, 6}, 2.0 / 924},
		// Interleaved: nothing to tell them apart.
		{"interleaved", []float64{1, 4, 5, 8, 9, 12}, []float64{2, 3, 6, 7, 10, 11}, 1},
		// 3 and 3 apart: 2 of C(6,3) = 20.
		{"small", []float64{1, 2, 3}, []float64{4, 5, 6}, 0.1},
	} {
		if got := mannWhitneyP(c.x, c.y); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: p = %v; want %v", c.name, got, c.want)
		}
	}
	// Ties take the normal approximation: identical samples are no evidence.
	if p := mannWhitneyP([]float64{5, 5, 5}, []float64{5, 5, 5}); p != 1 {
		t.Errorf("identical samples: p = %v; want 1", p)
	}
	if p := mannWhitneyP([]float64{1, 1, 2, 2, 3, 3}, []float64{7, 7, 8, 8, 9, 9}); p > 0.01 {
		t.Errorf("tied but apart: p = %v; want small", p)
	}
}

func TestCanTellApart(t *testing.T) {
	for _, c := range []struct {
		n1, n2 int
		want   bool
	}{{3, 3, false}, {3, 4, false}, {4, 4, true}, {6, 6, true}, {0, 6, false}} {
		if got := canTellApart(c.n1, c.n2); got != c.want {
			t.Errorf("canTellApart(%d, %d) = %v; want %v", c.n1, c.n2, got, c.want)
		}
	}
}
