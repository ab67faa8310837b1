package mp

// SupportPackageIsVersion1 is referred to by code that mpgen generates,
// so that such code does not compile against a runtime that does not
// support it. A runtime that changes what generated code may call adds a
// SupportPackageIsVersionN and keeps the older ones it still supports.
const SupportPackageIsVersion1 = true

// GeneratorVersion is the version of generated code that this runtime's
// mpgen writes; the generated files name it in their header.
const GeneratorVersion = 1
