@echo off
REM One command on a fresh Windows machine:
REM   setup_and_run.bat                   create transformer_env\, install, run the main job
REM   setup_and_run.bat test              create transformer_env\, install, run the whole test suite
REM   setup_and_run.bat --task addition   the main job with extra flags (the mode "run" is implied)
REM   setup_and_run.bat run --epochs 1    the same, with the mode spelled out
REM   setup_and_run.bat test -k cli       extra arguments after "test" go to pytest
REM (This file keeps CRLF line endings, see .gitattributes: cmd can miss a goto label in LF-only files.)
setlocal EnableExtensions DisableDelayedExpansion
cd /d "%~dp0"

REM The mode, then the rest for the job, checked before installing anything. %* would still hold the
REM mode after shift, so the rest is collected one argument at a time (quoted ones keep their quotes).
set "MODE=run"
set "FIRST=%~1"
if "%FIRST%"=="" goto collect
if /i "%FIRST%"=="run" goto mode_given
if /i "%FIRST%"=="test" goto mode_given
if "%FIRST:~0,1%"=="-" goto collect
goto usage
:mode_given
set "MODE=%FIRST%"
shift
:collect
set REST=
:next_argument
if "%~1"=="" goto arguments_done
set REST=%REST% %1
shift
goto next_argument
:arguments_done

if not exist transformer_env\Scripts\python.exe (
  echo ==^> creating virtual environment transformer_env\
  python -m venv transformer_env || exit /b 1
)
call transformer_env\Scripts\activate.bat
echo ==^> installing requirements.txt
python -m pip install --quiet -r requirements.txt || (echo installing requirements.txt failed & exit /b 1)
set HF_HUB_OFFLINE=1
set TRANSFORMERS_OFFLINE=1
set HF_DATASETS_OFFLINE=1

REM (outside parentheses: inside a block %ERRORLEVEL% would be read before the command runs)
if /i "%MODE%"=="test" goto test
echo ==^> running: python main.py --version both%REST%
python main.py --version both%REST%
exit /b %ERRORLEVEL%
:test
echo ==^> running the test suite
python -m pytest -q tests%REST%
exit /b %ERRORLEVEL%

:usage
echo usage: setup_and_run.bat [run^|test] [extra arguments for main.py, or for pytest with test] 1>&2
exit /b 2
