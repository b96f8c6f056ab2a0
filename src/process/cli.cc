#include "process/cli.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <uv.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "conf/loader.h"
#include "conf/parser.h"
#include "core/log.h"
#include "http/access_log.h"
#include "process/listeners.h"
#include "process/lua_command.h"
#include "process/master.h"
#include "process/pidfile.h"
#include "tidegate/version.h"

namespace tidegate::process {
namespace {

using core::LogLevel;

struct Args {
  bool help = false, version = false, version_full = false, test = false, dump = false, quiet = false;
  std::string signal;
  std::string error_log;
  conf::LoadOptions load;
};

void usage(FILE* out) {
  fprintf(out,
          "Usage: tidegate [-?hvVtTq] [-s signal] [-p prefix]\n"
          "                [-e filename] [-c filename] [-g directives]\n\n"
          "Options:\n"
          "  -?,-h         : this help\n"
          "  -v            : show version and exit\n"
          "  -V            : show version and configure options then exit\n"
          "  -t            : test configuration and exit\n"
          "  -T            : test configuration, dump it and exit\n"
          "  -q            : suppress non-error messages during configuration testing\n"
          "  -s signal     : send signal to a master process: stop, quit, reopen, reload\n"
          "  -p prefix     : set prefix path (default: current directory)\n"
          "  -e filename   : set error log file (default: logs/error.log, or stderr)\n"
          "  -c filename   : set configuration file (default: conf/tidegate.conf)\n"
          "  -g directives : set global directives out of configuration file\n");
}

// nginx accepts both "-c file" and "-cfile".
bool parseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; i++) {
    const char* p = argv[i];
    if (*p++ != '-') {
      fprintf(stderr, "tidegate: invalid option: \"%s\"\n", argv[i]);
      return false;
    }
    while (*p) {
      char c = *p++;
      auto value = [&](std::string* out) {
        if (*p) {
          *out = p;
        } else if (i + 1 < argc) {
          *out = argv[++i];
        } else {
          fprintf(stderr, "tidegate: option \"-%c\" requires %s\n", c,
                  c == 's' ? "signal name" : c == 'g' ? "directives" : c == 'p' ? "directory name" : "file name");
          return false;
        }
        p = "";
        return true;
      };
      switch (c) {
        case '?': case 'h': a->help = true; break;
        case 'v': a->version = true; break;
        case 'V': a->version = a->version_full = true; break;
        case 't': a->test = true; break;
        case 'T': a->test = a->dump = true; break;
        case 'q': a->quiet = true; break;
        case 's': if (!value(&a->signal)) return false; break;
        case 'p': if (!value(&a->load.prefix)) return false; break;
        case 'e': if (!value(&a->error_log)) return false; break;
        case 'c': if (!value(&a->load.conf_file)) return false; break;
        case 'g': if (!value(&a->load.extra)) return false; break;
        default:
          fprintf(stderr, "tidegate: invalid option: \"%c\"\n", c);
          return false;
      }
    }
  }
  return true;
}

int sendSignal(const conf::Config& cfg, const std::string& name) {
  int sig = 0;
  if (name == "stop") sig = SIGTERM;
  else if (name == "quit") sig = SIGQUIT;
  else if (name == "reopen") sig = SIGUSR1;
  else if (name == "reload") sig = SIGHUP;
  else {
    fprintf(stderr, "tidegate: invalid option: \"-s %s\"\n", name.c_str());
    return 1;
  }
  std::string err;
  pid_t pid = readPidFile(cfg.pid_file, &err);
  if (pid < 0) {
    fprintf(stderr, "tidegate: [error] %s\n", err.c_str());
    return 1;
  }
  if (kill(pid, sig) != 0) {
    fprintf(stderr, "tidegate: [alert] kill(%d, %d) failed (%d: %s)\n", pid, sig, errno, strerror(errno));
    return 1;
  }
  return 0;
}

void dumpConf(const conf::Config& cfg) {
  // As nginx -T: every file read, main file first, then includes.
  for (const auto& path : cfg.files) {
    std::string text, err;
    if (conf::readFile(path, &text, &err)) printf("# configuration file %s:\n%s\n", path.c_str(), text.c_str());
  }
}

bool daemonize(std::string* err) {
  pid_t pid = fork();
  if (pid < 0) {
    *err = std::string("fork() failed (") + strerror(errno) + ")";
    return false;
  }
  if (pid > 0) _exit(0);
  if (setsid() < 0) {
    *err = std::string("setsid() failed (") + strerror(errno) + ")";
    return false;
  }
  umask(0);
  int fd = open("/dev/null", O_RDWR);
  if (fd >= 0) {
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    if (fd > STDERR_FILENO) ::close(fd);
  }
  return true;
}

}  // namespace

int runCli(int argc, char** argv) {
  // A subcommand, not a flag: nginx's -e keeps its meaning everywhere else.
  if (argc > 1 && strcmp(argv[1], "lua") == 0) return runLuaCommand(argc, argv);
  saveArgv(argv);
  Args a;
  if (!parseArgs(argc, argv, &a)) return 1;
  if (a.help) {
    usage(stderr);
    return 0;
  }
  if (a.version) {
    fprintf(stderr, "tidegate version: tidegate/%s\n", TIDEGATE_VERSION);
    if (a.version_full) fprintf(stderr, "built with libuv %s, llhttp 8.1 (strict)\n", uv_version_string());
    if (!a.test && a.signal.empty()) return 0;
  }
  conf::ConfigPtr cfg;
  conf::ConfError cerr;
  if (!conf::loadConfig(a.load, &cfg, &cerr)) {
    fprintf(stderr, "tidegate: [emerg] %s\n", cerr.message().c_str());
    if (a.test) {
      std::string file = a.load.conf_file.empty() ? "conf/tidegate.conf" : a.load.conf_file;
      fprintf(stderr, "tidegate: configuration file %s test failed\n", file.c_str());
    }
    return 1;
  }
  if (!a.signal.empty()) return sendSignal(*cfg, a.signal);

  core::LogLevel level = LogLevel::kError;
  core::parseLogLevel(cfg->error_log_level, &level);
  a.load.error_log = a.error_log;
  std::string err;
  auto failed = [&](const std::string& why) {
    fprintf(stderr, "tidegate: [emerg] %s\n", why.c_str());
    if (a.test) fprintf(stderr, "tidegate: configuration file %s test failed\n", cfg->conf_file.c_str());
    return 1;
  };
  if (!core::ErrorLog::open(errorLogPath(*cfg, a.load), level, &err)) return failed(err);
  // -t opens what a start would (logs) and runs init_by_lua*, and binds nothing.
  if (!http::AccessLog::check(*cfg, &err)) return failed(err);
  std::shared_ptr<lua::Vm> vm = prepareLua(cfg, &err);
  if (!vm) return failed(err);
  if (a.test) {
    if (!a.quiet) {
      fprintf(stderr, "tidegate: the configuration file %s syntax is ok\n", cfg->conf_file.c_str());
      fprintf(stderr, "tidegate: configuration file %s test is successful\n", cfg->conf_file.c_str());
    }
    if (a.dump) dumpConf(*cfg);
    return 0;
  }
  // Bind before daemonizing, so that the shell sees a bind error and the exit status.
  ListenerSet listeners;
  listeners.adoptInherited();  // sockets of an old binary, after its USR2
  if (!listeners.open(*cfg, &err)) {
    TG_LOG(LogLevel::kEmerg, "%s", err.c_str());
    return failed(err);
  }
  listeners.closeUnadopted();
  // A binary started by USR2 stays the old master's child, as nginx's does:
  // it is already detached if the old one was.
  bool daemon = cfg->daemon && !listeners.inherited();
  if (daemon && !daemonize(&err)) return failed(err);
  if (cfg->daemon) core::ErrorLog::redirectStderr();
  return cfg->master_process ? runMaster(cfg, std::move(vm), a.load, &listeners)
                             : runSingle(cfg, std::move(vm), &listeners);
}

}  // namespace tidegate::process
