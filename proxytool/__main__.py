from proxytool.cli import app

app()
