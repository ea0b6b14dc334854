@echo off
REM One command on a fresh Windows machine:
REM   setup_and_run.bat          create transformer_env\, install, run the main job
REM   setup_and_run.bat test     create transformer_env\, install, run the whole test suite
setlocal
cd /d "%~dp0"
set MODE=%1
if "%MODE%"=="" set MODE=run

if not exist transformer_env\Scripts\python.exe (
  echo ==^> creating virtual environment transformer_env\
  python -m venv transformer_env || exit /b 1
)
call transformer_env\Scripts\activate.bat
echo ==^> installing requirements.txt
python -m pip install --quiet -r requirements.txt || (echo installing requirements.txt failed & exit /b 1)
set HF_HUB_OFFLINE=1
set TRANSFORMERS_OFFLINE=1

if "%MODE%"=="test" (
  python -m pytest -q tests
  exit /b %ERRORLEVEL%
)
if "%MODE%"=="run" (
  python main.py --version both
  exit /b %ERRORLEVEL%
)
echo usage: setup_and_run.bat [run^|test]
exit /b 2
