// The command line, with nginx's flags and meanings so that scripts and
// service files written for nginx work:
//   tidegate [-?hvVtTq] [-s signal] [-p prefix] [-e filename] [-c filename] [-g directives]
// and one subcommand, `tidegate lua ...` (process/lua_command.h).
#pragma once

namespace tidegate::process {

int runCli(int argc, char** argv);

}  // namespace tidegate::process
