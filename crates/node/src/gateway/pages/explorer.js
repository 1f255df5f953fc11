// verinfer explorer
