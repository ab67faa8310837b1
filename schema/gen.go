package schema

//go:generate sh gen.sh
