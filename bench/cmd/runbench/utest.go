package main

import (
	"math"
	"slices"
)

// mannWhitneyP is the two-sided p-value of the Mann-Whitney U test of
// samples x and y (the test benchstat uses): the chance of rank sums at
// least as uneven if both came from one distribution. It is exact for
// small samples without ties and the normal approximation, corrected for
// ties, otherwise.
func mannWhitneyP(x, y []float64) float64 {
	n1, n2 := len(x), len(y)
	if n1 == 0 || n2 == 0 {
		return 1
	}
	// U of x: the pairs in which x is larger, ties counting a half.
	var u float64
	for _, a := range x {
		for _, b := range y {
			switch {
			case a > b:
				u++
			case a == b:
				u += 0.5
			}
		}
	}
	all := slices.Concat(x, y)
	slices.Sort(all)
	tied := false
	for i := 1; i < len(all); i++ {
		tied = tied || all[i] == all[i-1]
	}
	if !tied && n1+n2 <= 30 {
		// counts[k] is how many of the C(n1+n2, n1) arrangements give U = k.
		counts := uDistribution(n1, n2)
		total := 0.0
		for _, c := range counts {
			total += c
		}
		lo := math.Min(u, float64(n1*n2)-u)
		tail := 0.0
		for k := 0; float64(k) <= lo; k++ {
			tail += counts[k]
		}
		return math.Min(1, 2*tail/total)
	}
	mean := float64(n1*n2) / 2
	n := float64(n1 + n2)
	var ties float64 // sum of t^3 - t over groups of ties
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j] == all[i] {
			j++
		}
		t := float64(j - i)
		ties += t*t*t - t
		i = j
	}
	sd := math.Sqrt(float64(n1*n2) / 12 * ((n + 1) - ties/(n*(n-1))))
	if sd == 0 {
		return 1
	}
	z := (math.Abs(u-mean) - 0.5) / sd // continuity correction
	return math.Min(1, math.Erfc(math.Max(z, 0)/math.Sqrt2))
}

// uDistribution returns, for samples of n1 and n2 without ties, how many
// orderings give each U from 0 to n1*n2, by the recurrence
// f(n1, n2, u) = f(n1-1, n2, u-n2) + f(n1, n2-1, u).
func uDistribution(n1, n2 int) []float64 {
	// f[i][j] is the distribution for samples of i and j.
	f := make([][][]float64, n1+1)
	for i := range f {
		f[i] = make([][]float64, n2+1)
		for j := range f[i] {
			d := make([]float64, i*j+1)
			switch {
			case i == 0 || j == 0:
				d[0] = 1
			default:
				for k := range d {
					if k-j >= 0 && k-j < len(f[i-1][j]) {
						d[k] += f[i-1][j][k-j]
					}
					if k < len(f[i][j-1]) {
						d[k] += f[i][j-1][k]
					}
				}
			}
			f[i][j] = d
		}
	}
	return f[n1][n2]
}
