use gateway_plugin_sdk as sdk; struct P; impl sdk::Guest for P { fn handle(_r: sdk::Request) -> Result<sdk::Response, sdk::HandlerError> { sdk::json(200, &1) } } sdk::export_plugin!(P);
