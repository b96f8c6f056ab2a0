#include "process/cli.h"

int main(int argc, char** argv) { return tidegate::process::runCli(argc, argv); }
